"""A learning-rate sweep over a Remora pool: an Optuna study whose trials each run

    remora run --connection POOL -- python trial.py --lr X

as a subprocess, so that the pool places each trial on a free GPU of one of its members (or
queues it until one is free). The metric is the last line the trial prints (`loss 0.123`).

    python sweep.py --connection pool.conn --trials 16 --jobs 4
    python sweep.py --connection pool.conn --grid 0.01,0.1,1,100 --jobs 2

A trial whose member was lost (the subprocess failed and its stderr says "lost") is run again,
up to --retries times, after --retry-delay seconds (doubling); the pool places the retry on a
live member. Any other failure (a bad
learning rate, a queue timeout) fails that trial only: the study goes on and reports it.

Prints one line per finished trial, then a summary:

    trial 3 lr=1 loss=0.352069 attempts=1 seconds=1.4
    trial 2 lr=100 failed: ...
    completed 3, failed 1, retried 0
    best lr=1 loss=0.352069

Exits 0 when at least one trial completed, 1 when none did.
"""
import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

import optuna

HERE = os.path.dirname(os.path.abspath(__file__))
# What the shim prints (stderr, "remora: ...") when a trial failed because of its member.
MEMBER_LOST = ("lost", "did not take the session")


class TrialFailed(Exception):
    """A trial that did not produce a metric; the study records it as failed and goes on."""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Optuna learning-rate sweep; each trial runs under `remora run`.",
        epilog="Arguments after `--` are passed to trial.py (e.g. -- --steps 200).",
    )
    ap.add_argument("--connection", required=True, help="the pool's connection file")
    ap.add_argument("--trials", type=int, help="trials to run (default: 16, or the grid's size)")
    ap.add_argument("--jobs", type=int, default=2, help="trials run at once (Optuna's n_jobs)")
    ap.add_argument(
        "--grid",
        help="comma-separated learning rates, each tried once (Optuna's GridSampler); "
        "default: TPE over --lr-range",
    )
    ap.add_argument("--lr-range", type=float, nargs=2, default=(1e-3, 1e2), metavar=("LO", "HI"))
    ap.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    ap.add_argument(
        "--retries", type=int, default=2, help="reruns of a trial whose member was lost"
    )
    ap.add_argument(
        "--retry-delay", type=float, default=2, help="seconds before the first retry (doubling)"
    )
    ap.add_argument("--queue-timeout", type=float, help="passed to `remora run`")
    ap.add_argument("--memory", help="passed to `remora run` (a quota per trial, e.g. 256M)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds one attempt may take")
    ap.add_argument(
        "--remora", default=os.environ.get("REMORA", "remora"), help="the remora binary"
    )
    ap.add_argument("--python", default=sys.executable, help="the trials' Python (with CuPy)")
    ap.add_argument(
        "--trial-pythonpath",
        help="PYTHONPATH for the trials, when CuPy is not in the sweep's own environment",
    )
    ap.add_argument("trial_args", nargs="*", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


class Runner:
    """Runs trials under `remora run` and keeps what the summary needs."""

    def __init__(self, args):
        self.args = args
        self.remora = shutil.which(args.remora) or args.remora
        self.env = dict(os.environ)
        if args.trial_pythonpath is not None:
            self.env["PYTHONPATH"] = args.trial_pythonpath
        self.lock = threading.Lock()
        self.retried = 0

    def command(self, lr):
        cmd = [self.remora, "run", "--connection", self.args.connection]
        if self.args.queue_timeout is not None:
            cmd += ["--queue-timeout", str(self.args.queue_timeout)]
        if self.args.memory:
            cmd += ["--memory", self.args.memory]
        cmd += ["--", self.args.python, os.path.join(HERE, "trial.py"), "--lr", repr(lr)]
        return cmd + self.args.trial_args

    def attempt(self, lr):
        """One run of the trial: (loss, None, False) or (None, why it failed, whether its
        member was lost)."""
        try:
            p = subprocess.run(
                self.command(lr),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.args.timeout,
            )
        except subprocess.TimeoutExpired:
            return None, f"no result within {self.args.timeout:g} s", False
        lines = p.stdout.strip().splitlines()
        if p.returncode == 0 and lines and lines[-1].startswith("loss "):
            try:
                return float(lines[-1].split()[1]), None, False
            except ValueError:
                pass
        # The shim's own lines ("remora: ...") say why (a lost member, a queue timeout); the
        # program's last line says what it made of it (CuPy's exception).
        err = p.stderr.strip().splitlines()
        why = [l for l in err if l.startswith("remora:") and "waiting for a GPU" not in l]
        why += err[-1:] if err and err[-1] not in why else []
        # The member's fault, worth a retry elsewhere: the pool says "the pool lost member ..."
        # or "lost the connection ..."; a retry the pool sent to a member that had just died,
        # before it noticed, says "the pool's member ... did not take the session".
        lost = p.returncode != 0 and any(s in p.stderr.lower() for s in MEMBER_LOST)
        return None, f"exit {p.returncode}: {' | '.join(why) or 'no output'}", lost

    def objective(self, trial):
        a = self.args
        if a.grid:
            lr = trial.suggest_categorical("lr", [float(x) for x in a.grid.split(",")])
        else:
            lr = trial.suggest_float("lr", a.lr_range[0], a.lr_range[1], log=True)
        started = time.monotonic()
        for n in range(1, a.retries + 2):
            loss, why, lost = self.attempt(lr)
            if loss is not None:
                trial.set_user_attr("attempts", n)
                self.say(
                    f"trial {trial.number} lr={lr:g} loss={loss:.6f} attempts={n} "
                    f"seconds={time.monotonic() - started:.1f}"
                )
                return loss
            if not lost or n > a.retries:
                break
            with self.lock:
                self.retried += 1
            self.say(f"trial {trial.number} lr={lr:g}: member lost, retrying ({why})")
            # The pool takes a few seconds to call a silent member missing; until then it may
            # place the retry there again.
            time.sleep(a.retry_delay * 2 ** (n - 1))
        trial.set_user_attr("error", why)
        self.say(f"trial {trial.number} lr={lr:g} failed: {why}")
        raise TrialFailed(why)

    def say(self, line):
        with self.lock:
            print(line, flush=True)


def main(argv=None):
    args = parse_args(argv)
    # Failed trials are reported below, once each, without Optuna's tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.grid:
        grid = [float(x) for x in args.grid.split(",")]
        sampler = optuna.samplers.GridSampler({"lr": grid}, seed=args.seed)
        trials = args.trials or len(grid)
    else:
        sampler = optuna.samplers.TPESampler(seed=args.seed)
        trials = args.trials or 16
    runner = Runner(args)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    # TrialFailed is caught so that the study records the trial as failed and goes on.
    study.optimize(runner.objective, n_trials=trials, n_jobs=args.jobs, catch=(TrialFailed,))

    states = [t.state for t in study.trials]
    done = states.count(optuna.trial.TrialState.COMPLETE)
    failed = states.count(optuna.trial.TrialState.FAIL)
    print(f"completed {done}, failed {failed}, retried {runner.retried}")
    if done == 0:
        print("no trial completed", file=sys.stderr)
        return 1
    best = study.best_trial
    print(f"best lr={best.params['lr']:g} loss={best.value:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
