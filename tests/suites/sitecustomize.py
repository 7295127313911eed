"""Makes folders of installed packages site directories in every Python process of a suite run,
so that their .pth files (numba-cuda's import redirector among them) take effect as in an
ordinary install: the test process and also the processes its tests start (multiprocessing's
spawn, `python -c` subprocesses), which inherit PYTHONPATH (this folder) and REMORA_SUITE_SITES
(the folders, separated by ':'). Python imports `sitecustomize` at start by itself."""
import os
import site

for folder in os.environ.get("REMORA_SUITE_SITES", "").split(os.pathsep):
    if folder:
        site.addsitedir(folder)
