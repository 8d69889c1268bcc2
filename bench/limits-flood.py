#!/usr/bin/env python3
"""Flood absorption and rate-limit cost, measured against a release bext.

  bench/limits-flood.py --bin /tmp/limits-release/release/bext [--seconds 10]

Runs a small threaded origin, then bext, and measures:
  1. a well-behaved client (bound to 127.0.0.3) at 50 req/s on one keep-alive
     connection: p50/p99 latency and success rate, without a flood and during a
     wrk flood (64 connections, full speed) from 127.0.0.1, which the rate limit
     answers with 429;
  2. the CPU cost of rate limiting: wrk at full speed through bext with no rate
     limit and with a rate limit every request passes, reporting req/s and bext
     CPU microseconds per request (utime+stime from /proc).
Numbers on a shared 2-core VM are noisy: compare within one run.
"""
import argparse, http.server, os, socket, socketserver, subprocess, sys, tempfile, threading, time

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add 40 ms
    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
    def log_message(self, *a):
        pass

class TServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    def handle_error(self, request, client_address):
        pass  # bext closing pooled connections at the end of a run

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start_bext(binary, port, origin, limits, tmp):
    cfg = os.path.join(tmp, f"bext-{port}.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "{tmp}/bext-{port}.pid"
upgrade_sock = "{tmp}/bext-{port}.sock"
[upstreams.origin]
nodes = ["127.0.0.1:{origin}"]
[[route_rules]]
pattern = "/*"
proxy = "origin"
[limits]
{limits}
""")
    p = subprocess.Popen([binary, "serve", "-c", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, f"bext-{port}.log"), "w"),
                         env={**os.environ, "RUST_LOG": "error"})
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return p
        except OSError:
            time.sleep(0.05)
    p.kill(); sys.exit("bext did not start")

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])  # utime + stime

def good_client(port, seconds, rate=50):
    """One keep-alive connection from 127.0.0.3, `rate` GETs per second."""
    lat, ok, total = [], 0, 0
    s = None
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        i += 1; total += 1
        try:
            if s is None:
                s = socket.socket(); s.bind(("127.0.0.3", 0)); s.settimeout(5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.connect(("127.0.0.1", port))
            t0 = time.monotonic()
            s.sendall(b"GET /good HTTP/1.1\r\nHost: app.test\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk: raise OSError("closed")
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(rest) < n:
                chunk = s.recv(4096)
                if not chunk: raise OSError("closed")
                rest += chunk
            lat.append(time.monotonic() - t0)
            if head.split()[1] == b"200": ok += 1
        except OSError:
            if s: s.close()
            s = None
    if s: s.close()
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")
    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "success": ok / max(total, 1), "requests": total}

def wrk(port, seconds, conns=64, threads=2):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/flood"],
                         capture_output=True, text=True).stdout
    rps = next((float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec")), 0.0)
    non2xx = next((int(l.split()[-1]) for l in out.splitlines() if "Non-2xx" in l), 0)
    total = next((int(l.split()[0]) for l in out.splitlines() if "requests in" in l), 0)
    return rps, non2xx, total

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bext-limits-bench.")
    oport = free_port()
    srv = TServer(("127.0.0.1", oport), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    port = free_port()
    b = start_bext(a.bin, port, oport, 'rate = { requests = 100, per = "1s", burst = 200 }', tmp)
    try:
        calm = good_client(port, a.seconds)
        print(f"no flood      : p50 {calm['p50_ms']:.2f} ms  p99 {calm['p99_ms']:.2f} ms  success {calm['success']:.1%} ({calm['requests']} req)")
        res = {}
        t = threading.Thread(target=lambda: res.update(w=wrk(port, a.seconds + 2)))
        t.start(); time.sleep(1)
        flood = good_client(port, a.seconds)
        t.join()
        rps, non2xx, total = res["w"]
        print(f"during flood  : p50 {flood['p50_ms']:.2f} ms  p99 {flood['p99_ms']:.2f} ms  success {flood['success']:.1%} ({flood['requests']} req)")
        print(f"  flood (wrk -c64 from 127.0.0.1): {rps:.0f} req/s, {non2xx}/{total} answered non-2xx (429)")
    finally:
        b.kill(); b.wait()

    hz = os.sysconf("SC_CLK_TCK")
    for name, limits in [("no rate limit", ""), ("rate limit, all pass", 'rate = { requests = 10000000, per = "1s", burst = 10000000 }')]:
        port = free_port()
        b = start_bext(a.bin, port, oport, limits, tmp)
        try:
            wrk(port, 2)  # warm-up
            c0 = cpu_ticks(b.pid)
            rps, non2xx, total = wrk(port, a.seconds)
            c1 = cpu_ticks(b.pid)
            us = (c1 - c0) / hz * 1e6 / max(total, 1)
            print(f"{name:22s}: {rps:.0f} req/s, bext CPU {us:.1f} us/request, non-2xx {non2xx}")
        finally:
            b.kill(); b.wait()

if __name__ == "__main__":
    main()
