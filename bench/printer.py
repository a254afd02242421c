"""The build step of the streaming scenario: print N bytes of text lines to stdout.

Run as ``python bench/printer.py N`` (by buildbot-worker's ``shell`` command and
by the bench worker's ``shell`` command alike)."""

import sys


def main() -> None:
    remaining = int(sys.argv[1])
    line = b"x" * 71 + b" bench output\n"
    block = line * (65536 // len(line) + 1)
    out = sys.stdout.buffer
    while remaining > 0:
        piece = block if remaining >= len(block) else block[:remaining]
        out.write(piece)
        remaining -= len(piece)
    out.flush()


if __name__ == "__main__":
    main()
