// Report a k6 run to the experiments API from the script itself: no Python, no extra step in the job.
//
//   import { reportSummary } from './lib/experiments.js';
//   export function handleSummary(data) {
//     return reportSummary(data, { name: 'lru_cache', variant: __ENV.VARIANT });
//   }
//
// It POSTs k6's own summary `data`, unchanged, to ${EXPERIMENTS_API_URL}/experiments/k6-summary with the key
// in EXPERIMENTS_API_KEY (never printed). The API maps it with the reporter's own code (experiments.k6summary),
// so the keys and values are those `scripts/report_k6_result.py` stores from the same run: one mapping, not two.
//
// - Idempotency-Key: a SHA-256 of the summary, the name and the variant, so a retried request (or a re-run
//   handleSummary of the same data) is stored once; the API answers a replay with 200.
// - Retries as the reporter does: connection errors, timeouts, 429 and 5xx, up to `retries` times (4) with
//   full-jitter exponential backoff (uniform in [0, min(20 x base, base x 2^attempt)], base 0.5 s); a
//   Retry-After header wins, up to 60 s. 2xx and 4xx are final; redirects are not followed.
// - Returns what handleSummary should return: a compact text summary on stdout (k6 prints none of its own
//   once handleSummary exists, and jslib's textSummary needs the network) plus the caller's `outputs`.
// - When the run could not be stored it says so on stderr ("... was NOT stored ..."), and the test's exit
//   code stays as it was, unless `failOnError: true`: then exec.test.fail() marks the test failed. k6 1.1
//   logs "test marked as failed" but keeps the exit code it had decided before handleSummary ran; a CI job
//   that must fail can look for that line, or use the reporter CLI, whose exit codes are documented.
//
// Options: name (required), variant, notes, outputs ({path|stdout|stderr: text}), failOnError, metric and
// excludeMetric (globs, as the reporter's --metric/--exclude-metric), higherIsBetter and lowerIsBetter (globs),
// k6File (default $K6_FILE), apiUrl and apiKey (default $EXPERIMENTS_API_URL, $EXPERIMENTS_API_KEY), retries,
// backoffBase (seconds), timeout (k6 duration string, default '10s'), summary (false: no text summary).
import http from 'k6/http';
import { sleep } from 'k6';
import crypto from 'k6/crypto';
import exec from 'k6/execution';

const PATH = '/experiments/k6-summary';
const DEFAULT_RETRIES = 4;
const DEFAULT_BACKOFF_BASE_S = 0.5;
const BACKOFF_CAP_FACTOR = 20;
const RETRY_AFTER_MAX_S = 60;
const USER_AGENT = 'k6-experiments-module/1';

function list(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function query(params) {
  const parts = [];
  for (const [key, value] of Object.entries(params)) {
    for (const item of list(value)) {
      if (item !== '' && item !== undefined && item !== null) {
        parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(item))}`);
      }
    }
  }
  return parts.join('&');
}

function ciRunUrl() {
  const repo = (__ENV.GITHUB_REPOSITORY || '').trim();
  const runId = (__ENV.GITHUB_RUN_ID || '').trim();
  if (!repo || !runId) return undefined;
  const server = (__ENV.GITHUB_SERVER_URL || '').trim() || 'https://github.com';
  return `${server.replace(/\/+$/, '')}/${repo}/actions/runs/${runId}`;
}

// The same summary, name and variant give the same key (lengths delimit the parts, as the reporter does).
export function idempotencyKey(body, name, variant) {
  const parts = [body, name, variant || ''];
  return crypto.sha256(parts.map((part) => `${part.length}:${part}`).join('\n'), 'hex');
}

function retryAfterSeconds(value) {
  if (!value) return undefined;
  const text = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const when = Date.parse(text);
  return Number.isNaN(when) ? undefined : Math.max(0, (when - Date.now()) / 1000);
}

export function backoffDelay(attempt, base, retryAfter) {
  if (retryAfter !== undefined) return Math.min(retryAfter, RETRY_AFTER_MAX_S);
  return Math.random() * Math.min(base * BACKOFF_CAP_FACTOR, base * 2 ** attempt);
}

function problemOf(response) {
  if (response.status === 0) return response.error || 'no answer';
  let detail = '';
  try {
    const body = JSON.parse(response.body);
    detail = [body.error, body.message].filter(Boolean).join(': ');
    for (const d of body.details || []) detail += `\n  - ${d.field}: ${d.reason}`;
  } catch (_) {
    detail = String(response.body || '').slice(0, 200);
  }
  return `HTTP ${response.status}${detail ? ` ${detail}` : ''}`;
}

// POST the summary with the reporter's retry rules; returns {ok, replayed, message}.
export function postSummary(data, opts) {
  const base = String(opts.apiUrl || __ENV.EXPERIMENTS_API_URL || '').trim().replace(/\/+$/, '');
  const key = String(opts.apiKey || __ENV.EXPERIMENTS_API_KEY || '').trim();
  if (!/^https?:\/\/[^/]/.test(base)) return { ok: false, message: 'EXPERIMENTS_API_URL is not an http(s) URL' };
  if (!key) return { ok: false, message: 'no API key: set EXPERIMENTS_API_KEY' };
  if (!opts.name) return { ok: false, message: "no experiment name: pass { name: '...' }" };
  const url = `${base}${PATH}?${query({
    name: opts.name,
    variant: opts.variant,
    notes: opts.notes,
    metric: opts.metric,
    'exclude-metric': opts.excludeMetric,
    'higher-is-better': opts.higherIsBetter,
    'lower-is-better': opts.lowerIsBetter,
    k6File: opts.k6File || __ENV.K6_FILE,
    gitSha: __ENV.GITHUB_SHA,
    ciRunUrl: ciRunUrl(),
  })}`;
  const body = JSON.stringify(data);
  const params = {
    headers: {
      'Content-Type': 'application/json',
      Accept: 'application/json',
      'User-Agent': USER_AGENT,
      'x-api-key': key,
      'Idempotency-Key': idempotencyKey(body, opts.name, opts.variant),
    },
    redirects: 0,
    timeout: opts.timeout || '10s',
    responseCallback: http.expectedStatuses({ min: 200, max: 499 }),
    tags: { name: 'experiments report' },
  };
  const retries = opts.retries === undefined ? DEFAULT_RETRIES : opts.retries;
  const backoffBase = opts.backoffBase === undefined ? DEFAULT_BACKOFF_BASE_S : opts.backoffBase;
  let problem = '';
  for (let attempt = 0; attempt <= retries; attempt += 1) {
    const response = http.post(url, body, params);
    if (response.status >= 200 && response.status < 300) {
      const replayed = String(response.headers['Idempotent-Replayed'] || '').toLowerCase() === 'true';
      let rows = '?';
      try {
        rows = Object.keys(JSON.parse(response.body).ids || {}).length;
      } catch (_) {
        // the count is only for the log line
      }
      const verb = replayed ? 'replayed (already stored, nothing new written)' : 'stored';
      return { ok: true, replayed, message: `experiments: ${verb}: ${opts.name} metrics=${rows} (HTTP ${response.status})` };
    }
    problem = problemOf(response);
    const retryable = response.status === 0 || response.status === 429 || response.status >= 500;
    if (!retryable) return { ok: false, message: `rejected by the API: ${problem}` };
    if (attempt < retries) {
      const delay = backoffDelay(attempt, backoffBase, retryAfterSeconds(response.headers['Retry-After']));
      console.warn(`experiments: attempt ${attempt + 1}/${retries + 1} failed (${problem}); retrying in ${delay.toFixed(2)}s`);
      sleep(delay);
    }
  }
  return { ok: false, message: `API unreachable at ${base}${PATH} after ${retries + 1} attempt(s): ${problem}` };
}

// ----------------------------------------------------------------------------------------------- text summary

// k6's order: avg, min, med, max, then the percentiles in increasing order, then count.
function statRank(stat) {
  const fixed = { avg: 0, min: 1, med: 2, max: 3, count: 1000 };
  if (stat in fixed) return fixed[stat];
  const match = /^p\((\d+(?:\.\d+)?)\)$/.exec(stat);
  return match ? 4 + Number(match[1]) : 999;
}

function duration(ms) {
  if (ms === 0) return '0s';
  if (ms < 1) return `${(ms * 1000).toFixed(2)}µs`;
  if (ms < 1000) return `${ms.toFixed(2)}ms`;
  return `${(ms / 1000).toFixed(2)}s`;
}

function figure(value, contains) {
  if (contains === 'time') return duration(value);
  if (contains === 'data') return value >= 1e6 ? `${(value / 1e6).toFixed(1)} MB` : `${(value / 1e3).toFixed(1)} kB`;
  return Number.isInteger(value) ? String(value) : value.toFixed(4).replace(/\.?0+$/, '');
}

// A compact text summary: one line per metric (and submetric), with k6's own figures.
export function compactSummary(data) {
  const names = Object.keys(data.metrics || {}).sort();
  const width = Math.max(20, ...names.map((name) => name.length + 2));
  const lines = [];
  for (const name of names) {
    const { type, contains, values = {}, thresholds = {} } = data.metrics[name];
    let text;
    if (type === 'trend') {
      text = Object.keys(values)
        .sort((a, b) => statRank(a) - statRank(b))
        .map((stat) => `${stat}=${figure(values[stat], contains)}`)
        .join(' ');
    } else if (type === 'rate') {
      text = `${(values.rate * 100).toFixed(2)}% ${values.passes} out of ${values.passes + values.fails}`;
    } else if (type === 'counter') {
      text = `${figure(values.count, contains)} ${figure(values.rate, contains)}/s`;
    } else {
      text = `${figure(values.value, contains)} min=${figure(values.min, contains)} max=${figure(values.max, contains)}`;
    }
    const marks = Object.values(thresholds).map((t) => (t.ok ? '✓' : '✗')).join('');
    lines.push(`  ${marks ? `${marks} ` : '  '}${`${name} `.padEnd(width, '.')}: ${text}`);
  }
  return `\n${lines.join('\n')}\n\n`;
}

// ----------------------------------------------------------------------------------------------- entry point

// handleSummary's return value: the text summary, the caller's outputs, and the report's outcome on stderr.
export function reportSummary(data, options = {}) {
  const opts = options || {};
  const outputs = Object.assign({}, opts.outputs || {});
  const result = postSummary(data, opts);
  if (opts.summary !== false && outputs.stdout === undefined) outputs.stdout = compactSummary(data);
  const line = result.ok
    ? `${result.message}\n`
    : `experiments: the run was NOT stored: ${result.message}\n`;
  outputs.stderr = (outputs.stderr || '') + line;
  if (!result.ok && opts.failOnError) {
    exec.test.fail(`the run was NOT stored in the experiments API: ${result.message.split('\n')[0]}`);
  }
  return outputs;
}
