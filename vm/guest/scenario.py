# SPDX-License-Identifier: LGPL-2.1-or-later
"""
The kho-inspect lab handover scenario (guest side).

Runs once per kernel, started by vm/guest/init with the run's configuration
(``/lab/out/lab.json``, written by ``kho-inspect lab run``). The stage number
comes from ``/lab/out/state.json`` (absent on the cold boot). In stage ``nK``:

1. in a KHO boot (K > 0): retrieve the memfd that stage K-1 preserved through
   ``/dev/liveupdate`` and verify every byte, then FINISH its session;
2. if another hop follows: preserve a fresh memfd with a known pattern in a new
   LUO session whose file descriptor stays open through the kexec;
3. copy ``/sys/kernel/debug/memblock/*`` and ``/sys/kernel/debug/kho/**``, then
   run the kho-inspect commands in this process (debug info loaded once);
4. write ``nK/stage.json`` with the facts the host judges (release, command
   line, KHO boot, test_kho, memfd, reserve_mem, command exit codes) and
   ``nK/dmesg.txt``;
5. with cores: create ``nK/.paused`` and wait for the host's ``nK/.resume``
   (the host dumps the guest and inspects it over QMP meanwhile);
6. ``kexec -s -l`` the same kernel with this kernel's command line
   (``--reuse-cmdline``) minus this stage's own extra words plus the next
   stage's (``stage_append``; see :func:`kexec_cmdline_args`), run the
   before-kexec commands into ``nK/before-kexec/``, and ``kexec -e``; or
   return (init powers off) after the last hop.

Commands arrive in lab.json with their placeholders expanded for /lab/out.
Runs under the guest's Debian python3 with only the standard library, drgn and
the host's kho_inspect package (shared at /lab/py/kho_inspect).
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

OUT = Path("/lab/out")
DEBUGFS = Path("/sys/kernel/debug")
HUGEPAGES = Path("/sys/kernel/mm/hugepages")
BLOCK = 4096
PAGE = os.sysconf("SC_PAGE_SIZE")

# include/uapi/linux/liveupdate.h: every ioctl is _IO(0xBA, nr); structs start with u32 size.
LIVEUPDATE_DEV = "/dev/liveupdate"
IOCTL_CREATE_SESSION = 0xBA00
IOCTL_RETRIEVE_SESSION = 0xBA01
IOCTL_PRESERVE_FD = 0xBA40
IOCTL_RETRIEVE_FD = 0xBA41
IOCTL_FINISH = 0xBA42
SESSION_STRUCT = struct.Struct("<Ii64s")  # size, fd (out), name[64]
FD_STRUCT = struct.Struct("<IiQ")  # size, fd, aligned_u64 token
FINISH_STRUCT = struct.Struct("<II")  # size, reserved
MEMFD_TOKEN = 0x4B484F49  # "KHOI"

# Kept open until kexec: closing a session fd unpreserves its files.
_KEEP = []


def say(stage, msg):
    print(f"KHO-LAB: {stage}: {msg}", flush=True)


def session_name(stage_index):
    return f"khoinspect-n{stage_index}"


def pattern_block(name, index):
    """Block ``index`` of the memfd preserved by session ``name``: 4 KiB, never all zero."""
    return hashlib.sha256(f"{name}:{index}".encode()).digest() * (BLOCK // 32)


def pattern(name, size):
    return b"".join(pattern_block(name, i) for i in range(size // BLOCK))


# --- LUO memfd ----------------------------------------------------------------------------

def _session_ioctl(dev_fd, request, name):
    buf = bytearray(SESSION_STRUCT.pack(SESSION_STRUCT.size, -1, name.encode()))
    fcntl.ioctl(dev_fd, request, buf, True)
    return SESSION_STRUCT.unpack(buf)[1]


def _fd_ioctl(session_fd, request, fd, token):
    buf = bytearray(FD_STRUCT.pack(FD_STRUCT.size, fd, token))
    fcntl.ioctl(session_fd, request, buf, True)
    return FD_STRUCT.unpack(buf)[1]


def open_liveupdate():
    return os.open(LIVEUPDATE_DEV, os.O_RDWR)


def preserve_memfd(dev_fd, name, size):
    """Create a memfd holding the pattern and preserve it in a new session ``name``."""
    memfd = os.memfd_create(name, 0)
    data = pattern(name, size)
    os.ftruncate(memfd, size)
    os.pwrite(memfd, data, 0)
    session_fd = _session_ioctl(dev_fd, IOCTL_CREATE_SESSION, name)
    _fd_ioctl(session_fd, IOCTL_PRESERVE_FD, memfd, MEMFD_TOKEN)
    _KEEP.extend([memfd, session_fd])
    return {"session": name, "token": MEMFD_TOKEN, "size": size,
            "sha256": hashlib.sha256(data).hexdigest(), "preserved": True,
            "pfn_runs": memfd_pfn_runs(memfd, size)}


def memfd_pfn_runs(memfd, size):
    """``[[pfn, pages], ...]`` backing the memfd, from /proc/self/pagemap (an oracle
    independent of KHO: bits 0-54 are the PFN when bit 63, present, is set)."""
    import ctypes
    import mmap

    pages = size // PAGE
    with mmap.mmap(memfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
        for i in range(pages):
            m[i * PAGE]  # fault every page in
        anchor = ctypes.c_char.from_buffer(m)
        start = ctypes.addressof(anchor)
        del anchor  # the mmap cannot close while a buffer export exists
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(start // PAGE * 8)
            raw = f.read(pages * 8)
    runs = []
    for (entry,) in struct.iter_unpack("<Q", raw):
        if not entry >> 63:
            raise RuntimeError("a memfd page is not present in pagemap")
        pfn = entry & ((1 << 55) - 1)
        if runs and runs[-1][0] + runs[-1][1] == pfn:
            runs[-1][1] += 1
        else:
            runs.append([pfn, 1])
    return runs



def _read_all(fd, size):
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 22, size - offset), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def retrieve_memfd(dev_fd, name, size):
    """Retrieve session ``name``'s memfd, compare it with the pattern, FINISH the session."""
    session_fd = _session_ioctl(dev_fd, IOCTL_RETRIEVE_SESSION, name)
    memfd = _fd_ioctl(session_fd, IOCTL_RETRIEVE_FD, -1, MEMFD_TOKEN)
    actual_size = os.fstat(memfd).st_size
    data = _read_all(memfd, actual_size)
    bad = [i for i in range(size // BLOCK)
           if data[i * BLOCK:(i + 1) * BLOCK] != pattern_block(name, i)]
    fcntl.ioctl(session_fd, IOCTL_FINISH, bytearray(FINISH_STRUCT.pack(FINISH_STRUCT.size, 0)),
                True)
    os.close(memfd)
    os.close(session_fd)
    return {"session": name, "token": MEMFD_TOKEN, "size": actual_size,
            "sha256": hashlib.sha256(data).hexdigest(), "bad_blocks": len(bad),
            "first_bad_block": bad[0] if bad else None,
            "verified": actual_size == size and not bad}


# --- collection ---------------------------------------------------------------------------

def copy_tree(src, dst):
    """Copy a debugfs directory, reading every file as bytes (blobs stay binary)."""
    errors = []
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                (dst / rel / name).write_bytes((Path(root) / name).read_bytes())
            except OSError as e:
                errors.append(f"{rel / name}: {e.strerror}")
    return errors


def hugepage_counters():
    out = {}
    for d in sorted(HUGEPAGES.glob("hugepages-*")):
        out[d.name] = {f: int((d / f).read_text()) for f in
                       ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages")
                       if (d / f).exists()}
    return out


def dmesg_text():
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, check=True,
                              errors="replace").stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return f"dmesg failed: {e}\n"


def test_kho_result(dmesg, stage_dir):
    if "test_kho: KHO restore succeeded" in dmesg:
        return "restore succeeded"
    if "test_kho: KHO restore failed" in dmesg:
        return "restore failed"
    if (stage_dir / "kho" / "out" / "sub_fdts" / "kho_test").exists():
        return "preserved"
    return "absent"


def reserve_mem_from_drgn(vmlinux, name):
    """``reserved_mem_table`` entry ``name`` read with the program kho-inspect opened."""
    from kho_inspect.target import TargetSpec, open_program

    prog = open_program(TargetSpec(vmlinux=vmlinux))
    table = prog["reserved_mem_table"]
    for i in range(int(prog["reserved_mem_count"])):
        entry = table[i]
        if entry.name.string_().decode() == name:
            return {"name": name, "start": int(entry.start), "size": int(entry.size)}
    return None


# --- the stage ----------------------------------------------------------------------------

class Stage:
    def __init__(self, cfg, index):
        self.cfg = cfg
        self.index = index
        self.name = f"n{index}"
        self.dir = OUT / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.result = {"stage": self.name, "index": index, "errors": [],
                       "started_uptime": _uptime()}

    def step(self, what, func, *args):
        """Run one step; record an exception as an error instead of stopping the stage."""
        try:
            return func(*args)
        except Exception as e:  # every failure must end up in stage.json
            self.result["errors"].append(f"{what}: {type(e).__name__}: {e}")
            traceback.print_exc()
            say(self.name, f"{what} failed: {e}")
            return None

    def write(self):
        (self.dir / "stage.json").write_text(json.dumps(self.result, indent=2) + "\n")

    def facts(self):
        cmdline = Path("/proc/cmdline").read_text()
        (self.dir / "cmdline").write_text(cmdline)
        self.result.update({
            "release": os.uname().release,
            "cmdline": cmdline.strip(),
            "kho_enabled": (DEBUGFS / "kho" / "out").is_dir(),
            "kho_boot": (DEBUGFS / "kho" / "in").is_dir(),
        })

    def memfd_in(self, dev_fd):
        name = session_name(self.index - 1)
        info = retrieve_memfd(dev_fd, name, self.cfg["memfd_bytes"])
        self.result["memfd_in"] = info
        say(self.name, f"memfd {name}: {info['size']} bytes, "
                       f"{'verified' if info['verified'] else 'MISMATCH'}")

    def memfd_out(self, dev_fd):
        info = preserve_memfd(dev_fd, session_name(self.index), self.cfg["memfd_bytes"])
        self.result["memfd_out"] = info
        say(self.name, f"memfd {info['session']} preserved ({info['size']} bytes)")

    def collect(self):
        errors = []
        for sub in ("memblock", "kho"):
            if (DEBUGFS / sub).is_dir():
                errors += copy_tree(DEBUGFS / sub, self.dir / sub)
            else:
                errors.append(f"{DEBUGFS / sub} does not exist")
        self.result["debugfs_errors"] = errors
        self.result["hugepages"] = hugepage_counters()
        for f in ("meminfo", "iomem"):
            shutil.copyfile(f"/proc/{f}", self.dir / f)

    def batch(self, commands, subdir):
        """Run kho-inspect ``commands`` in this process (debug info loaded once)."""
        from kho_inspect.cli.batch import run_batch

        return run_batch(["--vmlinux", self.cfg["vmlinux"]], commands, self.dir / subdir)

    def commands(self):
        records = self.batch(self.cfg["stage_commands"][self.name], "kho-inspect")
        self.result["commands"] = {r["command"]: r["exit_code"] for r in records}
        self.result["command_seconds"] = {r["command"]: r["seconds"] for r in records}

    def before_kexec(self):
        commands = self.cfg.get("before_kexec_commands", {}).get(self.name, [])
        if commands:
            records = self.batch(commands, "before-kexec")
            self.result["before_kexec_commands"] = {r["command"]: r["exit_code"]
                                                    for r in records}

    def reserve_mem(self, dmesg):
        name = self.cfg["reserve_mem_name"]
        info = {"name": name,
                "revived": f"Revived memory reservation '{name}' from KHO" in dmesg}
        found = self.step("read reserve_mem with drgn", reserve_mem_from_drgn,
                          self.cfg["vmlinux"], name)
        if found:
            info.update(found)
        self.result["reserve_mem"] = info

    def finish_facts(self):
        dmesg = dmesg_text()
        (self.dir / "dmesg.txt").write_text(dmesg)
        self.result["test_kho"] = test_kho_result(dmesg, self.dir)
        self.reserve_mem(dmesg)
        self.result["kho_warnings"] = len(re.findall(r"WARNING: .*kexec_handover", dmesg))

    def pause(self):
        (self.dir / ".paused").write_text(str(time.time()))
        say(self.name, "PAUSE waiting for the host (core dump, --qemu inspection)")
        deadline = time.monotonic() + self.cfg.get("pause_timeout", 1800)
        while not (self.dir / ".resume").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the host never created .resume")
            time.sleep(0.25)
        say(self.name, "resumed")

    def kexec(self):
        appends = self.cfg.get("stage_append", {})
        args = kexec_cmdline_args(Path("/proc/cmdline").read_text(), appends.get(self.name, ""),
                                  appends.get(f"n{self.index + 1}", ""))
        (OUT / "state.json").write_text(json.dumps({"stage": self.index + 1}) + "\n")
        os.sync()
        self.result["kexec_load"] = ["kexec", "-s", "-l", self.cfg["bzImage"], *args]
        subprocess.run(self.result["kexec_load"], check=True)
        self.result["kexec_loaded"] = True
        self.step("run the before-kexec commands", self.before_kexec)
        self.result["finished_uptime"] = _uptime()
        self.write()
        say(self.name, f"kexec -e into n{self.index + 1}")
        subprocess.run(["kexec", "-e"], check=True)
        raise RuntimeError("kexec -e returned")


def kexec_cmdline_args(cmdline, own, following):
    """kexec-tools options for the next kernel's command line: this kernel's
    (``cmdline``, as ``--reuse-cmdline`` reads it) without the words appended for this
    stage only (``own``), plus the next stage's (``following``).

    >>> kexec_cmdline_args("console=ttyS0 kho=on", "", "")
    ['--reuse-cmdline']
    >>> kexec_cmdline_args("console=ttyS0 kho=on", "", "reserve_mem=64M:4K:late")
    ['--reuse-cmdline', '--append=reserve_mem=64M:4K:late']
    >>> kexec_cmdline_args("console=ttyS0 kho=on reserve_mem=64M:4K:late ",
    ...                    "reserve_mem=64M:4K:late", "")
    ['--append=console=ttyS0 kho=on']
    """
    if not own.strip():
        return ["--reuse-cmdline"] + ([f"--append={following.strip()}"] if following.strip()
                                      else [])
    line, own = " ".join(cmdline.split()), " ".join(own.split())
    if line != own and not line.endswith(" " + own):
        raise RuntimeError(f"the command line does not end with this stage's words {own!r}")
    base = line[:len(line) - len(own)].strip()
    return [f"--append={' '.join(w for w in (base, following.strip()) if w)}"]


def _uptime():
    return float(Path("/proc/uptime").read_text().split()[0])


# --- drgn's own prompt (lab run --drgn-session; issue 10) ---------------------------------
# The drgn CLI on this kernel with kho-inspect's drgn plugin, typed at like a person would.
# Its REPL (and so %commands) only runs on a terminal: the session gets a pseudo-terminal.
# /lab/py holds the package without installed metadata, so no drgn.plugins entry point is
# visible: DRGN_PLUGINS loads the plugin by module name (drgn >= 0.0.31).

def drgn_session(st):
    """Run ``drgn -s VMLINUX`` under a pty, type the plugin's commands at its prompts;
    write ``nK/drgn-session.txt`` (the transcript) and ``nK/drgn-session.json`` (each
    input with its output) and record the outcome in stage.json."""
    import pty
    import select
    import termios

    prev = OUT / f"n{st.index - 1}"
    lines = ["%memblock --json",
             "%memblock --type reserved --flag RSRV_HUGETLB | grep -c '^[0-9].*RSRV_HUGETLB$'",
             "%kho scratch",
             "%kho scratch --json",
             f"%kho_check --previous {prev}/snapshot.json --dmesg --json",
             "from kho_inspect.memblock import read_memblock",
             "state = read_memblock(prog)",
             "print('helper:', state.memory.cnt, state.reserved.cnt)"]
    argv = ["drgn", "-s", st.cfg["vmlinux"], "--main-symbols"]
    env = dict(os.environ, TERM="dumb", PYTHON_BASIC_REPL="1",
               DRGN_PLUGINS="kho_inspect=kho_inspect.drgn_plugin")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    raw = bytearray()

    def text():
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r", "",
                      raw.decode(errors="replace"))

    def until_prompt(seconds, since=0):
        """Read until drgn prompts again after position ``since`` of the text."""
        deadline = time.monotonic() + seconds
        while not text()[since:].endswith("\n>>> "):
            ready, _, _ = select.select([master], [], [], 1.0)
            try:
                chunk = os.read(master, 1 << 16) if ready else b""
            except OSError:  # EIO: drgn closed the terminal
                chunk = b""
            raw.extend(chunk)
            if (not chunk and proc.poll() is not None) or time.monotonic() > deadline:
                return False
        return True

    records, ok = [], until_prompt(900)
    load_s = round(time.monotonic() - start, 1)
    for line in lines if ok else []:
        mark, t0 = len(text()), time.monotonic()
        os.write(master, line.encode() + b"\n")
        ok = until_prompt(600, mark)
        output = text()[mark:].split("\n", 1)[-1]  # without the echoed input
        records.append({"input": line, "output": output[:-len(">>> ")] if ok else output,
                        "seconds": round(time.monotonic() - t0, 1)})
        if not ok:
            break
    os.write(master, b"\x04")  # end of input: drgn exits
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    until_prompt(0)  # drain
    os.close(master)
    (st.dir / "drgn-session.txt").write_text(f"# {' '.join(argv)}\n" + text())
    result = {"argv": argv, "plugins": env["DRGN_PLUGINS"], "exit_code": code,
              "load_seconds": load_s, "seconds": round(time.monotonic() - start, 1),
              "completed": ok and len(records) == len(lines)}
    (st.dir / "drgn-session.json").write_text(
        json.dumps(dict(result, commands=records), indent=2) + "\n")
    st.result["drgn_session"] = result
    say(st.name, f"drgn session: {len(records)} of {len(lines)} commands, exit {code}, "
                 f"{result['seconds']} s")
    if not result["completed"] or code != 0:
        raise RuntimeError(f"the drgn session did not complete (exit {code}); "
                           f"see {st.name}/drgn-session.txt")


# --- kho-inspect trace (issue 9) ------------------------------------------------------------
# With kho_lab_trace on the command line: the memfd preservation runs under
# `kho-inspect trace` (nK/trace-preserve.json) and, in n1, a runtime 1 GiB hugetlb
# allocation too (n1/trace-gigantic.json). With kho_lab_bench=trace: a storm of LUO memfd
# preserve/unpreserve cycles runs under trace (nK/bench-trace.json, bench/bench_trace.py).

GIGANTIC = HUGEPAGES / "hugepages-1048576kB" / "nr_hugepages"
TRACE_READY = "Hit Ctrl-C to end."


def cmdline_words():
    return Path("/proc/cmdline").read_text().split()


def trace_argv(st, name, *args):
    return [sys.executable, "-m", "kho_inspect", "--vmlinux", st.cfg["vmlinux"], "trace",
            "-o", str(st.dir / f"{name}.json"), *args]


def run_traced(st, name, args, action=None, ready_timeout=900):
    """Run ``kho-inspect trace ARGS``; with ``action``: once it reports its probes
    attached, run ``action`` (run even if the trace never got ready: the scenario
    must go on), then stop the trace with SIGINT. Records nK/NAME.{txt,err,json}."""
    import signal

    argv = trace_argv(st, name, *args)
    err_path = st.dir / f"{name}.err"
    t0 = time.monotonic()
    with open(st.dir / f"{name}.txt", "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
    info = {"argv": argv, "ready": None}
    if action is not None:
        while time.monotonic() - t0 < ready_timeout and proc.poll() is None:
            if TRACE_READY in err_path.read_text(errors="replace"):
                info["ready"] = round(time.monotonic() - t0, 1)
                break
            time.sleep(0.5)
        try:
            action()
        finally:
            if proc.poll() is None:
                time.sleep(1)  # let the last events reach the buffer
                proc.send_signal(signal.SIGINT)
    try:
        info["exit_code"] = proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        info["exit_code"] = proc.wait()
    info["seconds"] = round(time.monotonic() - t0, 1)
    st.result.setdefault("trace", {})[name] = info
    say(st.name, f"trace {name}: exit {info['exit_code']}, ready after {info['ready']} s, "
                 f"{info['seconds']} s in all")
    return info


def traced_memfd_out(st, dev_fd):
    run_traced(st, "trace-preserve", ["-q", "--probe", "kho"], lambda: st.memfd_out(dev_fd))


def traced_gigantic(st):
    """Raise the 1 GiB pool by one page at runtime under trace (the boot gave it some),
    save what ``kho-inspect hugetlb`` finds then (nK/trace-gigantic-hugetlb.json), and
    shrink the pool back: the stage's own commands must see the boot's pages only (the
    page freed is the newest, at the head of the free list)."""
    before = int(GIGANTIC.read_text())
    info = run_traced(st, "trace-gigantic",
                      ["--probe", "contig", "--", "sh", "-c", f"echo {before + 1} > {GIGANTIC}"])
    info.update(nr_before=before, nr_after=int(GIGANTIC.read_text()))
    with open(st.dir / "trace-gigantic-hugetlb.json", "w") as out:
        info["hugetlb_exit_code"] = subprocess.run(
            [sys.executable, "-m", "kho_inspect", "--vmlinux", st.cfg["vmlinux"], "hugetlb",
             "--json"], stdout=out).returncode
    GIGANTIC.write_text(f"{before}\n")
    info["nr_restored"] = int(GIGANTIC.read_text())


def storm(sessions, pages):
    """``sessions`` LUO cycles: preserve a memfd of ``pages`` pages, close the session
    (which unpreserves it). Every page is one kho_preserve_folio, one radix key added
    and one deleted."""
    dev_fd = open_liveupdate()
    size = pages * PAGE
    t0 = time.monotonic()
    for i in range(sessions):
        memfd = os.memfd_create(f"storm{i}", 0)
        os.ftruncate(memfd, size)
        os.pwrite(memfd, b"\x5a" * size, 0)
        session_fd = _session_ioctl(dev_fd, IOCTL_CREATE_SESSION, f"storm-{os.getpid()}-{i}")
        _fd_ioctl(session_fd, IOCTL_PRESERVE_FD, memfd, MEMFD_TOKEN)
        os.close(session_fd)
        os.close(memfd)
    print(json.dumps({"sessions": sessions, "pages": pages,
                      "seconds": round(time.monotonic() - t0, 3)}))
    return 0


def bench_trace(st):
    """The storm once alone, then under trace with the default ring buffer and with a
    1 MiB one (which must lose events, and count them); bench/bench_trace.py reads both."""
    sessions, pages = 20, 1024
    storm_argv = [sys.executable, __file__, "storm", str(sessions), str(pages)]
    proc = subprocess.run(storm_argv, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the storm alone failed: {proc.stderr.strip()[-600:]}")
    alone = json.loads(proc.stdout)
    for name, extra in (("bench-trace", []), ("bench-trace-small", ["--buffer-pages", "256"])):
        info = run_traced(st, name, ["-q", "--no-classes", "--probe", "kho", *extra, "--",
                                     *storm_argv])
        traced = [json.loads(line) for line in (st.dir / f"{name}.txt").read_text().splitlines()
                  if line.startswith('{"sessions"')]
        info.update(sessions=sessions, pages=pages, storm_seconds=alone["seconds"],
                    traced_storm_seconds=traced[0]["seconds"] if traced else None)


def run_stage(cfg, index):
    st = Stage(cfg, index)
    say(st.name, f"stage start (uptime {st.result['started_uptime']} s)")
    st.step("read kernel facts", st.facts)
    last = index >= cfg["hops"]
    if "kho_lab_bench=trace" in cmdline_words():  # the storm opens /dev/liveupdate itself
        st.step("bench kho-inspect trace", bench_trace, st)
    dev_fd = st.step("open /dev/liveupdate", open_liveupdate)
    if dev_fd is not None:
        _KEEP.append(dev_fd)
        if index > 0:
            st.step("retrieve the memfd", st.memfd_in, dev_fd)
        if index == 1 and "kho_lab_trace" in cmdline_words() and GIGANTIC.exists():
            st.step("trace a runtime 1 GiB allocation", traced_gigantic, st)
        if not last and "kho_lab_trace" in cmdline_words():
            st.step("preserve a memfd under trace", traced_memfd_out, st, dev_fd)
        elif not last:
            st.step("preserve a memfd", st.memfd_out, dev_fd)
    st.step("copy debugfs", st.collect)
    st.step("run kho-inspect", st.commands)
    st.step("collect the kernel log", st.finish_facts)
    if cfg.get("drgn_session") and index == 1:
        st.step("run a drgn session", drgn_session, st)
    st.result["finished_uptime"] = _uptime()
    st.write()
    if cfg.get("cores"):
        st.step("pause for the host", st.pause)
    if last:
        say(st.name, "last stage done")
        (OUT / "state.json").write_text(json.dumps({"stage": index, "done": True}) + "\n")
        return 0
    st.step("kexec", st.kexec)
    st.write()
    return 1


def main(argv):
    if argv[1:2] == ["storm"]:
        return storm(int(argv[2]), int(argv[3]))
    cfg = json.loads(Path(argv[1]).read_text())
    state_path = OUT / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"stage": 0}
    if state.get("done"):
        say("lab", "state.json says the run is done; nothing to do")
        return 0
    return run_stage(cfg, int(state["stage"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
