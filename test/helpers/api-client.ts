// A test's client of the control API on its UNIX socket (what curl
// --unix-socket does), and the metrics it serves, parsed by a Prometheus
// text-format parser written by others.
import http from 'node:http';
import parse from 'parse-prometheus-text-format';

export interface ApiReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: unknown;
}

export function api(socket: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<ApiReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json: unknown = null;
        try {
          json = JSON.parse(text);
        } catch {
          // metrics are text
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** One sample's value of a metric family, by labels (undefined when absent). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = parse(text).find((f) => f.name === name);
  const sample = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  if (!sample) return undefined;
  return Number(sample.value ?? sample.count);
}

export { parse as parseMetrics };
