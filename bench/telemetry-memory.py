#!/usr/bin/env python3
"""Metric series stay bounded, and what a series costs.

Starts a small origin and a release bext with ROUTES extra routes, then:
  1. sends 10,000 requests with distinct paths and 2,000 with distinct
     (unknown) methods: the number of metric series and the RSS must stay
     flat (labels are route patterns and folded methods, never raw input);
  2. sends one request to each of the ROUTES routes: each adds one request
     duration series; (RSS after - RSS before) / new series = bytes/series.
Prints a small report. Usage:
  bench/telemetry-memory.py [--bext target/release/bext] [--routes 2000]
Asserts nothing about speed; exits non-zero only if series grow with input.
"""
import argparse, http.client, http.server, os, socket, subprocess, sys, tempfile, threading, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body in one write (flushed after each request): separate
    # small writes meet delayed ACKs, 40 ms per request.
    wbufsize = 1 << 16
    def handle_one(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("cache-control", "private")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_one
        raise AttributeError(name)
    def log_message(self, *a):
        pass

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/__bext/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return text

def series(text):
    """Exposition lines (a histogram series is one line per bucket + sum + count)."""
    return sum(1 for l in text.splitlines() if l and not l.startswith("#"))

def histograms(text):
    return sum(1 for l in text.splitlines() if l.startswith("bext_http_server_request_duration_seconds_count{"))

def get_all(port, paths, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for p in paths:
        c.request(method, p)
        r = c.getresponse(); r.read()
        if r.getheader("connection", "").lower() == "close":
            c.close(); c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.close()

def methods(port, n):
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"M{i:05d}X /m HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        s.settimeout(5)
        try:
            s.recv(4096)  # the status line is enough
        except OSError:
            pass
        s.close()

def settle(port, want_requests, pid):
    # Requests are recorded after their response is out. RSS is read before
    # the scrape that confirms it (a scrape's own buffers would count).
    time.sleep(1.5)
    rss = rss_kib(pid)
    for _ in range(200):
        t = scrape(port)
        total = sum(float(l.rsplit(" ", 1)[1]) for l in t.splitlines()
                    if l.startswith("bext_http_server_request_duration_seconds_count{"))
        if total >= want_requests:
            return t, rss
        time.sleep(0.05)
    return scrape(port), rss

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bext", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "bext"))
    ap.add_argument("--routes", type=int, default=2000)
    ap.add_argument("--paths", type=int, default=10000)
    ap.add_argument("--methods", type=int, default=2000)
    a = ap.parse_args()
    oport, bport = free_port(), free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", oport), Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    d = tempfile.mkdtemp(prefix="bext-telemetry-memory.")
    routes = "".join(f'[[route_rules]]\npattern = "/r{i}/*"\nproxy = "o"\ncache = false\n\n' for i in range(a.routes))
    conf = f"""[server]
listen = ["127.0.0.1:{bport}"]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "{d}/bext.pid"
upgrade_sock = "{d}/upgrade.sock"

[upstreams.o]
nodes = ["127.0.0.1:{oport}"]

[limits]
allow = ["127.0.0.0/8"]

{routes}[[route_rules]]
pattern = "/*"
proxy = "o"
cache = false
"""
    open(f"{d}/bext.toml", "w").write(conf)
    p = subprocess.Popen([a.bext, "serve", "-c", f"{d}/bext.toml"], stdout=subprocess.DEVNULL,
                         stderr=open(f"{d}/bext.log", "w"), env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", bport), timeout=1).close(); break
            except OSError:
                time.sleep(0.1)
        sent = 0
        get_all(bport, ["/warm"] * 200); sent += 200
        t0, r0 = settle(bport, sent, p.pid); s0 = series(t0)
        get_all(bport, [f"/p/{i}/x?q={i}" for i in range(a.paths)]); sent += a.paths
        methods(bport, a.methods)
        t1, r1 = settle(bport, sent, p.pid); s1 = series(t1)
        get_all(bport, [f"/r{i}/x" for i in range(a.routes)]); sent += a.routes
        t2, r2 = settle(bport, sent, p.pid); s2 = series(t2)
        h0, h1, h2 = histograms(t0), histograms(t1), histograms(t2)
        print(f"bext {a.bext}, {a.routes} extra routes, threads = 1")
        print(f"start:                          {s0:6d} lines, {h0:5d} request histograms, RSS {r0/1024:7.1f} MiB")
        print(f"+ {a.paths} distinct paths, {a.methods} distinct methods: {s1:6d} lines, {h1:5d} request histograms, RSS {r1/1024:7.1f} MiB")
        print(f"+ one request to each of {a.routes} routes: {s2:6d} lines, {h2:5d} request histograms, RSS {r2/1024:7.1f} MiB")
        if h2 > h1:
            print(f"RSS per new request histogram series ({(s2 - s1) // (h2 - h1)} exposition lines each): "
                  f"{(r2 - r1) * 1024 / (h2 - h1):.0f} bytes")
        # New label combinations from client input: at most the _OTHER
        # method and the statuses bext answers junk with.
        if h1 > h0 + 4:
            print("FAIL: series grew with client input", file=sys.stderr)
            return 1
        return 0
    finally:
        p.terminate(); p.wait(timeout=60); srv.shutdown()

sys.exit(main())
