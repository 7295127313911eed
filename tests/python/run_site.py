"""Runs a script with a folder of installed packages added as a site directory (so its .pth
files, such as numba-cuda's redirector, take effect): run_site.py SITE_DIR SCRIPT ARGS..."""
import site, sys, runpy
site.addsitedir(sys.argv[1])
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
