"""What a stock Buildbot peer needs that two workerwire ends do not.

A stock **buildbot-worker** (``--protocol msgpack_experimental_v7``) expects the
master to do what Buildbot's ``worker/protocols/msgpack.py`` does: send
``set_worker_settings`` before any command, emulate the builder list with
``listdir`` / ``mkdir`` commands on absolute paths, turn a command's
builder-relative paths into absolute ones, and rename the transfer commands.
It sends output as Buildbot's line-info values.  A stock **Buildbot master**
sends exactly those messages to a workerwire worker, which maps them back.
Both directions are here, so the rest of the backend speaks the contract.
"""

from __future__ import annotations

import time
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from workerwire.buildbot_dialect import builder_of
from workerwire.errors import ProtocolError
from workerwire.master import Update

__all__ = [
    "WORKER_SETTINGS",
    "StockWorkerPaths",
    "updates_from_stock_worker",
    "updates_for_stock_master",
    "COMMAND_NAMES_FROM_MASTER",
    "ROOT_BUILDER",
    "STOCK_TRANSFER_OPS",
    "stock_transfer_message",
    "TRANSFER_COMMANDS",
    "absolute_transfer_paths",
]

#: What Buildbot 4.3's master sends in ``set_worker_settings``.
WORKER_SETTINGS = {
    "newline_re": r"(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)",
    "max_line_length": 4096,
    "buffer_timeout": 5,
    "buffer_size": 64 * 1024,
}

#: Buildbot's master renames these commands on the msgpack wire; a workerwire
#: worker maps them back to the contract's names.
COMMAND_NAMES_FROM_MASTER = {
    "upload_file": "uploadFile",
    "upload_directory": "uploadDirectory",
    "download_file": "downloadFile",
}
_COMMAND_NAMES_TO_WORKER = {v: k for k, v in COMMAND_NAMES_FROM_MASTER.items()}

#: The builder a workerwire worker runs a stock master's builder-less commands
#: on (the ``listdir`` / ``mkdir`` / ``stat`` / ``rmdir`` of its builder-list
#: emulation, all on absolute paths).
ROOT_BUILDER = "buildbot-master-builder-list"


class StockWorkerPaths:
    """The master side's view of a stock worker's directories."""

    def __init__(self) -> None:
        self.info: dict[str, Any] | None = None
        self.builder_dirs: dict[str, PurePath] = {}

    @property
    def path_cls(self) -> type[PurePath]:
        return PureWindowsPath if (self.info or {}).get("system") == "nt" else PurePosixPath

    @property
    def basedir(self) -> PurePath:
        if self.info is None or not isinstance(self.info.get("basedir"), str):
            raise ProtocolError("the worker's info (its basedir) is not known yet")
        return self.path_cls(self.info["basedir"])

    def builder_dir(self, builder: str) -> PurePath:
        return builder_of(self.builder_dirs, builder)

    def translate(self, builder: str, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``(command name, args)`` as a stock worker takes them."""
        base = self.builder_dir(builder)
        args = dict(args)

        def join(*parts: Any) -> str:
            return str(base.joinpath(*[str(p) for p in parts]))

        def many(key: str) -> list[str]:
            value = args.pop(key)
            return [join(v) for v in (value if isinstance(value, list) else [value])]

        if name in ("mkdir", "rmdir") and "dir" in args:
            args["paths"] = many("dir")
        elif name == "cpdir" and "fromdir" in args:
            args["from_path"] = join(args.pop("fromdir"))
            args["to_path"] = join(args.pop("todir"))
        elif name == "stat" and "file" in args:
            args["path"] = join(args.get("workdir", ""), args.pop("file"))
        elif name == "glob" and "path" in args:
            args["path"] = join(args["path"])
        elif name == "listdir" and "dir" in args:
            args["path"] = join(args.pop("dir"))
        elif name == "rmfile" and "path" in args:
            args["path"] = join(args["path"])
        elif name == "shell" and "workdir" in args:
            args["workdir"] = join(args["workdir"])
        elif name in ("uploadFile", "uploadDirectory") and "workersrc" in args:
            args["path"] = join(args.get("workdir", ""), args["workersrc"])
        elif name == "downloadFile" and "workerdest" in args:
            args["path"] = join(args.get("workdir", ""), args["workerdest"])
        for key in ("want_stdout", "want_stderr"):
            if key in args:
                args[key] = bool(args[key])
        return _COMMAND_NAMES_TO_WORKER.get(name, name), args


def _text(value: Any) -> Any:
    """The text of Buildbot's line info ``[text, line ends, times]``."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], (str, bytes)):
        return value[0]
    return value


def updates_from_stock_worker(args: Any) -> list[Update]:
    """A stock worker's ``update`` args (``[[key, value], ...]``, output as line
    info) as contract updates.

    :raises ProtocolError: not a list of ``[key, value]`` pairs.
    """
    if not isinstance(args, list):
        raise ProtocolError("update args must be a list of [key, value] pairs")
    pairs: list[Update] = []
    for pair in args:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ProtocolError(f"update args must be [key, value] pairs, not {pair!r:.80}")
        key, value = pair
        if key in ("stdout", "stderr", "header"):
            value = _text(value)
        elif key == "log" and isinstance(value, list) and len(value) == 2:
            value = [value[0], _text(value[1])]
        pairs.append((key, value))
    return pairs


def _line_info(text: Any, now: float) -> list[Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        text = str(text)
    if not text.endswith("\n"):
        # Buildbot's master takes whole lines only (its log asserts it);
        # buildbot-worker ends a partial last line with "\n" the same way.
        text += "\n"
    ends = [i for i, c in enumerate(text) if c == "\n"]
    return [text, ends, [now] * len(ends)]


def updates_for_stock_master(updates: list[Update]) -> list[list[Any]]:
    """Contract updates as a stock Buildbot master reads them (output as line info)."""
    now = time.time()
    out: list[list[Any]] = []
    for key, value in updates:
        if key in ("stdout", "stderr", "header"):
            out.append([key, _line_info(value, now)])
        elif key == "log" and isinstance(value, (list, tuple)) and len(value) == 2:
            out.append([key, [value[0], _line_info(value[1], now)]])
        else:
            out.append([key, value])
    return out


#: Buildbot's transfer messages (worker -> master): op -> (handle key, the
#: handle's method, the message keys that are the method's arguments).
STOCK_TRANSFER_OPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "update_upload_file_write": ("writer", "write", ("args",)),
    "update_upload_file_utime": ("writer", "utime", ("access_time", "modified_time")),
    "update_upload_file_close": ("writer", "close", ()),
    "update_upload_directory_write": ("writer", "write", ("args",)),
    "update_upload_directory_unpack": ("writer", "unpack", ()),
    "update_read_file": ("reader", "read", ("length",)),
    "update_read_file_close": ("reader", "close", ()),
}

#: The commands a stock master gives a handle (kept on its side), by the
#: contract's name: the handle's key.
TRANSFER_COMMANDS = {"uploadFile": "writer", "uploadDirectory": "writer", "downloadFile": "reader"}


def stock_transfer_message(command_name: str, kind: str, method: str, args: list[Any]) -> dict[str, Any]:
    """The message a stock master takes for ``handle.callRemote(method, *args)``
    of a command named *command_name* (the contract's name).

    :raises ProtocolError: a method Buildbot's dialect cannot carry.
    """
    directory = command_name == "uploadDirectory"
    if kind == "writer" and method == "write":
        op = "update_upload_directory_write" if directory else "update_upload_file_write"
        return {"op": op, "args": args[0]}
    if kind == "writer" and method == "utime":
        access, modified = args[0]
        return {"op": "update_upload_file_utime", "access_time": access, "modified_time": modified}
    if kind == "writer" and method == "close":
        return {"op": "update_upload_file_close"}
    if kind == "writer" and method == "unpack":
        return {"op": "update_upload_directory_unpack"}
    if kind == "reader" and method == "read":
        return {"op": "update_read_file", "length": args[0]}
    if kind == "reader" and method == "close":
        return {"op": "update_read_file_close"}
    raise ProtocolError(f"Buildbot's msgpack dialect has no message for {kind}.{method}")


def absolute_transfer_paths(command_name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A stock master's transfer args with its absolute ``path`` as the file.

    Buildbot's msgpack master sends ``path`` (builder directory, workdir and
    file joined) beside the relative ``workdir`` / ``workersrc`` /
    ``workerdest``; a workerwire worker runs every builder of a stock master
    at its base directory, so only the absolute path names the right file.
    """
    path = args.get("path")
    key = {"uploadFile": "workersrc", "uploadDirectory": "workersrc", "downloadFile": "workerdest"}.get(command_name)
    if key is None or not isinstance(path, str):
        return args
    out = dict(args)
    out[key] = path
    return out
