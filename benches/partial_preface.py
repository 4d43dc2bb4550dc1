#!/usr/bin/env python3
"""CPU a proxy spends on clients that send the start of an HTTP/2 preface
and then nothing.

Opens CONNS connections to ADDR, each sending PREFIX (default b"P", the
first byte of "PRI * HTTP/2.0"), holds them open for SECONDS, and reports
the user and system CPU time the process PID used meanwhile, read from
/proc/PID/stat. A proxy that waits for readability spends next to nothing;
one that polls on a timer spends in proportion to CONNS. For comparison,
run it again with --prefix G (an HTTP/1.1 request that never finishes),
and with --half-close (the client's FIN follows the prefix at once).

Usage: benches/partial_preface.py --pid PID --addr 127.0.0.1:8080
       [--conns 1000] [--seconds 5] [--prefix P] [--half-close]

Keep SECONDS below the proxy's request_header timeout, which closes the
connections. Loopback only; the connections close when the script ends.
"""

import argparse
import os
import socket
import time


def cpu_seconds(pid: int) -> float:
    """utime + stime of PID, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--addr", required=True, help="host:port of the proxy's cleartext listener")
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--prefix", default="P")
    parser.add_argument("--half-close", action="store_true", help="close the sending side after the prefix")
    args = parser.parse_args()
    host, port = args.addr.rsplit(":", 1)

    sockets = []
    for _ in range(args.conns):
        s = socket.create_connection((host, int(port)))
        s.sendall(args.prefix.encode())
        if args.half_close:
            s.shutdown(socket.SHUT_WR)
        sockets.append(s)
    # Let the proxy accept them all before the measurement starts.
    time.sleep(0.5)
    before = cpu_seconds(args.pid)
    time.sleep(args.seconds)
    used = cpu_seconds(args.pid) - before
    print(
        f"{args.conns} connections sending {args.prefix!r}{' then FIN' if args.half_close else ''}: "
        f"{used:.2f} s of CPU in {args.seconds:.1f} s ({100 * used / args.seconds:.1f}% of one core)"
    )
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
