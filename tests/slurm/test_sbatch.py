"""A real one-node SLURM cluster on this machine runs the sbatch script (make test-slurm).

Installs Debian's slurm-wlm and munge when missing (needs root and apt), writes a minimal
slurm.conf (proctrack/linuxproc, task/none), starts munged, slurmctld and slurmd, submits
slurm/submit.sh on a tiny simulated run and checks the job finished and published.
"""

import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from engine import config, simulate
from tests.conftest import ROOT

pytestmark = pytest.mark.slurm

CONF = """ClusterName=dsa110test
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _run(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def slurm():
    if shutil.which("slurmctld") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("SLURM is not installed and cannot be installed here")
        r = _run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                 "slurm-wlm munge", timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
    host = socket.gethostname()
    mem = int(int(open("/proc/meminfo").readline().split()[1]) / 1024 * 0.9)
    for d in ("/etc/slurm", "/var/spool/slurmd", "/var/spool/slurmctld", "/var/log/slurm",
              "/etc/munge", "/run/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
    Path("/etc/slurm/slurm.conf").write_text(CONF.format(host=host, cpus=os.cpu_count(),
                                                         mem=mem))
    if not Path("/etc/munge/munge.key").exists():
        Path("/etc/munge/munge.key").write_bytes(os.urandom(1024))
    os.chmod("/etc/munge/munge.key", 0o400)
    _run("chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge")
    # a fresh controller state: no jobs left over from an earlier run
    _run("pkill -x slurmctld; pkill -x slurmd; sleep 1; rm -rf /var/spool/slurmctld/*")
    r = _run("runuser -u munge -- munged --force || munged --force")
    for cmd in ("slurmctld", "slurmd"):
        r = _run(cmd)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
    for _ in range(60):
        if "idle" in _run("sinfo -h -o %T").stdout:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the SLURM node never became idle: {_run('sinfo').stdout}")
    yield host
    _run("pkill -x slurmd; pkill -x slurmctld")


def test_sbatch_runs_the_engine_and_publishes(slurm, tmp_path):
    cfg_path = config.CONFIG_DIR / "ci.toml"
    cfg = config.load(cfg_path, {"sim.nobs": 2})
    simulate.simulate_run(cfg, tmp_path / "incoming")
    r = subprocess.run([str(ROOT / "slurm" / "submit.sh"), str(cfg_path), str(tmp_path), "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split()[-1]
    t0 = time.time()
    while time.time() - t0 < 900:
        if job not in _run("squeue -h -o %i").stdout.split():
            break
        time.sleep(3)
    out = (tmp_path / "logs" / f"dsa110-{job}.out").read_text()
    err = (tmp_path / "logs" / f"dsa110-{job}.err").read_text()
    state = _run(f"scontrol show job {job}").stdout
    assert "JobState=COMPLETED" in state or "real-time factor" in out, out[-2000:] + err[-3000:]
    assert "nodes alive: 1 of 1" in out
    db = sqlite3.connect(tmp_path / "registry.sqlite")
    assert db.execute("SELECT count(*) FROM products WHERE state = 'published'").fetchone()[0] == 2
    assert not list(Path("/tmp").glob(f"r{job}"))  # the job's Ray temp dir was removed
