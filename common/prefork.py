"""A pre-forking launcher: stage commands run in forks of one process that has imported the heavy libraries once.

A stage process spends 10-15 s importing torch, transformers and MLflow before it does anything; in the smoke DAG
that is most of each stage's time. The flow therefore starts `python -m common.prefork --socket PATH`, which binds
PATH, imports the libraries of `PRELOAD` and then serves: each `python -m stages.<name> ...` that finds
`LASD_PREFORK_SOCKET` in its environment (the flow sets it for the `dvc repro` it runs) sends its command line,
working directory, environment and standard streams over the socket and waits; the launcher forks, and the fork
runs the stage module exactly as `python -m` would, writing to the caller's streams, and reports its exit status,
which the caller exits with. DVC, its lock and dvc.lock see an ordinary command.

Rules that keep a forked stage equal to a fresh one:
- Only third-party libraries are preloaded, never project code: each fork imports common/ and stages/ afresh, so a
  stage runs the code DVC hashed. Preloading creates no threads of its own and touches no GPU, GL context or
  database (a fork inherits none of those safely).
- A request from another interpreter or another working directory than the launcher's is declined; the caller then
  runs the stage itself, as it does when there is no launcher (no socket, or not Linux). So is one whose CPU kernel
  variables (common/cpu.py: the AVX2 pins, or a user's own values) differ from the launcher's: torch has chosen its
  kernels in the launcher already, and a fork would run the launcher's, not the ones the caller asked for.
- Each stage runs in its own process group; if the caller goes away (killed by DVC, Prefect or Ctrl-C), the whole
  group is terminated. The launcher exits when the process that started it does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Mapping, NoReturn

SOCKET_ENV = "LASD_PREFORK_SOCKET"
# What the stages import that costs seconds, measured on the 2-core CPU: torch ~2.7 s, transformers with the two VLM
# families ~5 s, MLflow with its SQL store ~4 s. Nothing that opens a GL context (mujoco) or reads project code.
PRELOAD = ("numpy", "h5py", "torch", "transformers", "transformers.models.qwen3_vl.modeling_qwen3_vl",
           "transformers.models.idefics3.modeling_idefics3", "transformers.models.auto.modeling_auto", "mlflow",
           "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store")
# Variables that choose torch's CPU kernels (common/cpu.py) or its libraries' set-up when torch is first used: in a
# fork, the launcher's choice holds, so a caller whose values differ is declined. By prefix, so that this module
# needs nothing else of common/ (the tests copy it alone into toy projects).
KERNEL_ENV_PREFIXES = ("ATEN_", "ONEDNN_", "DNNL_", "MKL_", "NPY_", "OPENBLAS_", "LASD_CPU_")
DECLINED = -1000  # status sent back instead of running: the caller runs the stage itself
_HEADER = struct.Struct("!I")  # length of the JSON request that follows
_STATUS = struct.Struct("!i")
_TERMINATE_GRACE_S = 10.0  # after SIGTERM, before SIGKILL, when the caller has gone


def available() -> bool:
    """Forking a process that has imported torch is safe on Linux; macOS's frameworks do not survive a fork."""
    return sys.platform.startswith("linux")


# ---------------------------------------------------------------------------------------------------- the caller


def hand_over_stage(package: str) -> None:
    """In a `python -m <package>.<name> ...` process: run it in the launcher and exit with its status. Return at
    once (the caller runs the stage itself) when the process runs something else (a test importing the package),
    when there is no launcher or it declines, and in a rank of a distributed launch (`accelerate launch`: each
    rank is its own process, on its own device)."""
    path = os.environ.get(SOCKET_ENV)
    argv = getattr(sys, "orig_argv", [])
    if (not path or not available() or len(argv) < 3 or argv[1] != "-m" or argv[2].split(".")[0] != package
            or "WORLD_SIZE" in os.environ):
        return
    status = request(path, argv[2], argv[3:])
    if status is not None:
        raise SystemExit(status)


def request(path: str, module: str, args: list[str]) -> int | None:
    """Ask the launcher at `path` to run `python -m <module> <args>` here; its exit status, or None if it could not
    be reached or declined."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:
        client.close()
        return None
    with client:
        body = json.dumps({"module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ),
                           "executable": os.path.realpath(sys.executable)}).encode()
        _flush_standard_streams()  # what this process printed comes before the stage's output
        try:
            socket.send_fds(client, [_HEADER.pack(len(body)) + body], [0, 1, 2])
        except OSError:  # e.g. a closed standard stream: nothing was started, run the stage here
            return None
        try:
            reply = _receive_exactly(client, _STATUS.size)
        except OSError:
            reply = None
    if reply is None:
        print(f"prefork launcher at {path} closed the connection before reporting the stage's status; "
              "see the flow's log", file=sys.stderr)
        return 1
    status = _STATUS.unpack(reply)[0]
    return None if status == DECLINED else status


def _flush_standard_streams() -> None:
    """Flush Python's buffers of stdout and stderr; a stream that is gone or closed has nothing to flush."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# -------------------------------------------------------------------------------------------------- the launcher


def serve(path: Path, preload: tuple[str, ...], parent: int) -> None:
    """Bind `path`, preload the libraries, then fork a handler per request until process `parent` (the flow) exits."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))  # before preloading: an early caller waits in the backlog rather than running alone
    listener.listen(64)
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional family or library that is not installed: its stages import what they need
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener.settimeout(1.0)
    root, executable = os.getcwd(), os.path.realpath(sys.executable)
    while os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        _flush_standard_streams()  # a fork would write the launcher's unflushed output a second time
        if os.fork() == 0:
            listener.close()
            _exit_with(_handle, connection, root, executable)
        connection.close()


def _exit_with(body: Callable[..., int], *args: object) -> NoReturn:
    """End a forked process with `body(*args)`'s status, whatever it raises: a fork must never return into the code
    of the process it was forked from (the launcher's loop, the handler's wait)."""
    status = 1
    try:
        status = body(*args)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def _reap(*_: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _handle(connection: socket.socket, root: str, executable: str) -> int:
    """One request, in a fork of the launcher: receive it, fork the stage, relay its status (or stop it)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the caller, whose going away stops the stage
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    connection.settimeout(None)
    data, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
    size = _HEADER.unpack(data)[0] if len(data) == _HEADER.size else 0
    body = _receive_exactly(connection, size) if size else None
    request = json.loads(body) if body else None
    if (request is None or len(fds) != 3 or request["cwd"] != root or request["executable"] != executable
            or _kernel_env(request["env"]) != _kernel_env(os.environ)):
        for fd in fds:
            os.close(fd)
        connection.sendall(_STATUS.pack(DECLINED))
        return 0
    stage = os.fork()
    if stage == 0:
        connection.close()
        _exit_with(_run_stage, request, fds)
    for fd in fds:
        os.close(fd)
    status = _wait(stage, connection)
    if status is not None:
        try:
            connection.sendall(_STATUS.pack(status))
        except OSError:
            pass  # the caller went away just as the stage ended
    return 0


def _kernel_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that chose torch's CPU kernels in the launcher (KERNEL_ENV_PREFIXES)."""
    return {name: value for name, value in env.items() if name.startswith(KERNEL_ENV_PREFIXES)}


def _wait(stage: int, connection: socket.socket) -> int | None:
    """The stage's exit status; or None after terminating its process group because the caller went away."""
    poller = select.poll()
    poller.register(connection, select.POLLIN | select.POLLHUP)
    while True:
        pid, status = os.waitpid(stage, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if poller.poll(100) and not connection.recv(1, socket.MSG_PEEK):  # EOF: the caller is gone
            _terminate(stage)
            return None


def _terminate(stage: int) -> None:
    """SIGTERM to the stage's process group, SIGKILL if it is still there after the grace period."""
    for sig, grace in ((signal.SIGTERM, _TERMINATE_GRACE_S), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(stage, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not os.waitpid(stage, os.WNOHANG)[0]:
            time.sleep(0.1)
    try:
        os.waitpid(stage, 0)
    except ChildProcessError:
        pass


def _run_stage(request: dict, fds: list[int]) -> int:
    """In the stage's own process: take over the caller's streams, directory and environment; run the module."""
    import runpy

    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({k: v for k, v in request["env"].items() if k != SOCKET_ENV})
    sys.path[0] = request["cwd"]  # as `python -m` sets it
    sys.argv = [request["module"], *request["args"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except BaseException:  # as the interpreter would: the traceback on stderr, status 1
        traceback.print_exc()
        status = 1
    _flush_standard_streams()  # the fork ends with os._exit, which flushes nothing
    return status


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main() -> None:
    """`python -m common.prefork --socket PATH [--preload MODULE ...]` (the flow starts it; see the module doc)."""
    parser = argparse.ArgumentParser(prog="python -m common.prefork", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on (must not exist)")
    parser.add_argument("--preload", nargs="*", default=list(PRELOAD), help="modules imported once, before serving")
    parser.add_argument("--parent", type=int, default=os.getppid(),
                        help="process whose end ends the launcher (default: the one that started it)")
    args = parser.parse_args()
    if not available():
        sys.exit(f"python -m common.prefork: forking after importing torch is unsafe on {sys.platform}; "
                 "run the stages without the launcher (`python -m flows --no-prefork`)")
    serve(args.socket, tuple(args.preload), args.parent)


if __name__ == "__main__":
    main()
