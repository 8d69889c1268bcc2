#!/usr/bin/env python3
"""A live OTLP/HTTP receiver for benchmarks: accepts POST /v1/traces, reads the
body and answers 200 with an empty ExportTraceServiceResponse. Counts bytes and
requests (printed on exit). Usage: otlp-sink.py PORT"""
import http.server, sys, signal

stats = {"requests": 0, "bytes": 0}

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        stats["requests"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass

def bye(*_):
    print(f"otlp-sink: {stats['requests']} export requests, {stats['bytes']} bytes", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, bye)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
