#!/usr/bin/env python3
"""Memory per idle websocket tunnel and per idle keep-alive connection (issue 14).

Runs a proxy (bext's release build by default, or nginx for the side-by-side
row) in front of a small origin that answers HTTP/1.1 keep-alive requests and
websocket upgrades, then for each scenario:

  1. RSS of the proxy's process tree when idle (after a short warm-up),
  2. opens N clients and leaves them idle (tunnels: handshake + one text
     frame each way, as a LiveView socket does when it joins; conns: one
     request each, kept alive), RSS with them open -> KiB per item,
  3. closes them all and waits --after seconds: RSS after close, and how far it
     is above the idle level.

Each scenario starts a fresh proxy process, so memory pooled by one does not
absorb the next. Stdlib only. Example (the issue's table):

  bench/memory.py --proxy bext,nginx --tunnels 2000 --conns 5000 --after 30

CI runs it with small N as a smoke test (`--smoke`): it checks the script and
the proxy's tunnel path work end to end, and asserts nothing about the numbers.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ origin ---

async def origin_conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            hdrs = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip()
            if hdrs.get("upgrade", "").lower() == "websocket":
                key = hdrs.get("sec-websocket-key", "").encode()
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
                writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                              "\r\n\r\n").encode())
                await writer.drain()
                # Echo each client frame back as an unmasked frame of the same
                # payload size (the tunnel then carries bytes both ways).
                while True:
                    b = await reader.readexactly(2)
                    n = b[1] & 0x7F
                    if n == 126:
                        n = int.from_bytes(await reader.readexactly(2), "big")
                    elif n == 127:
                        n = int.from_bytes(await reader.readexactly(8), "big")
                    masked = b[1] & 0x80
                    if masked:
                        await reader.readexactly(4)
                    await reader.readexactly(n)
                    if b[0] & 0x0F == 8:
                        return
                    if n < 126:
                        writer.write(bytes([0x81, n]) + b"x" * n)
                    await writer.drain()
            body = b"ok\n"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: private\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve_origin(port):
    raise_nofile()
    srv = await asyncio.start_server(origin_conn, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()


# ------------------------------------------------------------------ proxies ---

def bext_cmd(tmp, port, origin_port, bin_path):
    cfg = f"""
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "{tmp}/bext.pid"
upgrade_sock = "{tmp}/bext-upgrade.sock"

[upstreams.origin]
nodes = ["127.0.0.1:{origin_port}"]
idle_timeout = "300s"

[[route_rules]]
pattern = "/live/*"
proxy = "origin"
websocket = true

[[route_rules]]
pattern = "/*"
proxy = "origin"
cache = false

[limits]
allow = ["127.0.0.0/8"]
"""
    path = os.path.join(tmp, "bext.toml")
    with open(path, "w") as f:
        f.write(cfg)
    return [bin_path, "serve", "-c", path], {"RUST_LOG": "warn"}


def nginx_cmd(tmp, port, origin_port, _bin):
    cfg = f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {tmp};
  proxy_temp_path {tmp};
  fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp};
  scgi_temp_path {tmp};
  keepalive_timeout 300s;
  keepalive_requests 100000;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location /live/ {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
    }}
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(cfg)
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", path, "-p", tmp], {}


PROXIES = {"bext": bext_cmd, "nginx": nginx_cmd}


def tree_pids(pid):
    out = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for k in kids:
            out.extend(tree_pids(int(k)))
    except OSError:
        pass
    return out


def rss_kib(pid):
    t = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        t += int(line.split()[1])
                        break
        except OSError:
            pass
    return t


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# ------------------------------------------------------------------ clients ---

async def one_request(port, keep):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /keepalive HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    await r.readexactly(n)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:80])
    if keep:
        return (r, w)
    w.close()
    return None


async def one_tunnel(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    w.write(b"GET /live/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key +
            b"\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:80])
    # One masked text frame (a join-sized message), then read the echo.
    payload = b'["3","3","lv:phx-F","phx_join",{"url":"http://bench/","params":{}}]'
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    w.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await w.drain()
    b = await r.readexactly(2)
    await r.readexactly(b[1] & 0x7F)
    return (r, w)


async def open_many(fn, n, conc=200):
    sem = asyncio.Semaphore(conc)
    held, failed = [], 0

    async def go():
        nonlocal failed
        async with sem:
            try:
                held.append(await asyncio.wait_for(fn(), 20))
            except Exception:
                failed += 1
    await asyncio.gather(*(go() for _ in range(n)))
    return held, failed


async def alive_count(held):
    # A closed connection reads EOF at once; an open idle one times out.
    alive = 0
    for r, _w in held:
        try:
            data = await asyncio.wait_for(r.read(1), 0.001)
            if data:
                alive += 1
        except asyncio.TimeoutError:
            alive += 1
        except ConnectionError:
            pass
    return alive


def close_all(held):
    for _r, w in held:
        try:
            w.close()
        except Exception:
            pass


# ------------------------------------------------------------------ runner ---

def run_scenario(proxy, scenario, n, args, origin_port):
    tmp = tempfile.mkdtemp(prefix=f"bext-mem-{proxy}-")
    port = free_port()
    cmd, env = PROXIES[proxy](tmp, port, origin_port, args.bin)
    errf = open(os.path.join(tmp, "proxy.log"), "w")
    p = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=errf, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        if not wait_port(port):
            raise RuntimeError(f"{proxy} did not listen; see {tmp}/proxy.log")

        async def body():
            # Warm up: a few requests and a few tunnels, all closed again, so
            # the idle level includes what the first request allocates once.
            for _ in range(20):
                await one_request(port, False)
            warm, _ = await open_many(lambda: one_tunnel(port), 10)
            close_all(warm)
            await asyncio.sleep(2)
            idle = rss_kib(p.pid)
            fn = (lambda: one_tunnel(port)) if scenario == "tunnels" else (lambda: one_request(port, True))
            held, failed = await open_many(fn, n)
            await asyncio.sleep(args.settle)
            alive = await alive_count(held)
            with_items = rss_kib(p.pid)
            close_all(held)
            t0 = time.time()
            series = []
            while time.time() - t0 < args.after:
                await asyncio.sleep(min(5, args.after))
                series.append(round(rss_kib(p.pid) / 1024, 1))
            after = rss_kib(p.pid)
            return idle, with_items, after, alive, failed, series

        idle, with_items, after, alive, failed, series = asyncio.run(body())
        per = (with_items - idle) / alive if alive else None
        row = {
            "proxy": proxy, "scenario": scenario, "n": n, "alive": alive, "failed": failed,
            "rss_idle_kib": idle, "rss_with_kib": with_items, "rss_after_close_kib": after,
            "kib_per_item": round(per, 2) if per is not None else None,
            "after_close_over_idle_pct": round(100.0 * (after - idle) / idle, 1) if idle else None,
            "after_close_series_mib": series, "after_s": args.after,
        }
        log(f"  {proxy:6s} {scenario:7s} n={n} alive={alive} failed={failed} RSS idle "
            f"{idle / 1024:.1f} MiB, with {with_items / 1024:.1f} MiB -> {row['kib_per_item']} KiB each;"
            f" {args.after:.0f}s after close {after / 1024:.1f} MiB ({row['after_close_over_idle_pct']}% over idle)")
        return row
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        errf.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy", default="bext", help="comma list of: bext,nginx")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "bext"),
                    help="bext binary (default: target/release/bext)")
    ap.add_argument("--tunnels", type=int, default=2000, help="idle websocket tunnels (0: skip)")
    ap.add_argument("--conns", type=int, default=5000, help="idle keep-alive connections (0: skip)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle before RSS is read")
    ap.add_argument("--after", type=float, default=30.0, help="seconds after close before RSS is read")
    ap.add_argument("--smoke", action="store_true", help="small N, short waits (CI)")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--serve-origin", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_origin is not None:
        asyncio.run(serve_origin(args.serve_origin))
        return
    if args.smoke:
        args.tunnels, args.conns, args.settle, args.after = min(args.tunnels, 50), min(args.conns, 50), 0.5, 1.0
    hard = raise_nofile()
    need = max(args.tunnels, args.conns) + 100
    if need > hard:
        sys.exit(f"memory.py: {need} descriptors needed per process, the hard limit is {hard}")
    origin_port = free_port()
    origin = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-origin", str(origin_port)],
                              stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        if origin.stdout.readline().strip() != "ready":
            sys.exit("memory.py: the origin did not start")
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), "?")
        log(f"memory.py: cpu={cpu} cores={os.cpu_count()} after={args.after}s")
        for proxy in args.proxy.split(","):
            for scenario, n in (("tunnels", args.tunnels), ("conns", args.conns)):
                if n > 0:
                    rows.append(run_scenario(proxy, scenario, n, args, origin_port))
    finally:
        origin.terminate()
        origin.wait()
    print("| proxy | what | N alive | RSS idle MiB | RSS with MiB | KiB each | RSS after close MiB | over idle |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['proxy']} | {r['scenario']} | {r['alive']} | {r['rss_idle_kib'] / 1024:.1f} | "
              f"{r['rss_with_kib'] / 1024:.1f} | {r['kib_per_item']} | {r['rss_after_close_kib'] / 1024:.1f} | "
              f"{r['after_close_over_idle_pct']}% |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if r["alive"] == 0 or r["failed"] > 0]
    if bad:
        sys.exit(f"memory.py: some items failed or none stayed open: {bad}")


if __name__ == "__main__":
    main()
