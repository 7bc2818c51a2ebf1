// Ingest load: VUS virtual users POST reports to {API_URL}/experiments/report for DURATION.
//
//   API_URL=http://127.0.0.1:3000 API_KEY=... VUS=20 DURATION=15s \
//     k6 run --summary-export=./ingest_summary.json k6/ingest_load_test.js
//
// Every iteration sends a NEW report under a new Idempotency-Key (1 to 12 metrics, so rows per report vary),
// except every REPEAT_EVERY-th, which re-sends one of the VU's own earlier reports: the same key and the very
// same bytes, which the API must answer 200 with `Idempotent-Replayed: true` and the first answer's ids,
// writing nothing. So, after a run, `experiments` must hold exactly `metrics_acked` rows (= `metrics_in_201`
// when no answer was lost) and `ingest.idempotency_keys` exactly `reports_acked` records.
//
// Settings (environment):
//   API_URL, API_KEY     where to post, and the key (x-api-key)                (default http://127.0.0.1:3000)
//   VUS, DURATION        load shape                                             (default 20, 15s)
//   REPEAT_EVERY         every Nth iteration of a VU re-sends an earlier report; 0 = never  (default 5)
//   RETRIES              re-sends of a report answered 5xx (or no answer), same key and bytes, after the
//                        server's Retry-After (at most MAX_RETRY_WAIT_S), like the reporter  (default 0)
//   ALLOW_5XX            1 = 5xx answers are expected (a database outage): no threshold on them  (default 0)
//   RUN_ID               prefix of the Idempotency-Keys                         (default: made up per run)
//
// Counters in the summary (every one is present, 0 when nothing happened):
//   status_201, status_200, status_5xx, status_other   every HTTP answer, by status (other: 0, 3xx, 4xx)
//   status_503_retry_after                             503 answers that carried a numeric Retry-After
//   metrics_in_201                                     sum of the ids over the 201 answers
//   reports_acked, metrics_acked                       new reports whose final answer was 201, or a 200 replay
//                                                      of an attempt whose answer was lost (with RETRIES)
//   reports_unacked                                    new reports that never got a 2xx
//   replays_ok                                         repeats answered 200 + Idempotent-Replayed, same body
//   replays_bad                                        repeats answered anything else but 5xx (must be 0)
//   replays_unacked                                    repeats that never got an answer but 5xx
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';

const API_URL = (__ENV.API_URL || 'http://127.0.0.1:3000').replace(/\/+$/, '');
const API_KEY = __ENV.API_KEY || '';
const REPEAT_EVERY = Number(__ENV.REPEAT_EVERY ?? 5);
const RETRIES = Number(__ENV.RETRIES || 0);
const MAX_RETRY_WAIT_S = Number(__ENV.MAX_RETRY_WAIT_S || 5);
const ALLOW_5XX = ['1', 'true', 'yes'].includes(String(__ENV.ALLOW_5XX || '').toLowerCase());
const METRIC_NAMES = [
  'p50_ms', 'p90_ms', 'p95_ms', 'p99_ms', 'avg_ms', 'min_ms',
  'max_ms', 'rps', 'requests_count', 'error_rate', 'checks_pass_rate', 'iterations',
];

const counters = {
  status_201: new Counter('status_201'),
  status_200: new Counter('status_200'),
  status_5xx: new Counter('status_5xx'),
  status_other: new Counter('status_other'),
  status_503_retry_after: new Counter('status_503_retry_after'),
  metrics_in_201: new Counter('metrics_in_201'),
  reports_acked: new Counter('reports_acked'),
  metrics_acked: new Counter('metrics_acked'),
  reports_unacked: new Counter('reports_unacked'),
  replays_ok: new Counter('replays_ok'),
  replays_bad: new Counter('replays_bad'),
  replays_unacked: new Counter('replays_unacked'),
};

const thresholds = {
  status_other: ['count==0'], // no 4xx: every report sent is valid, every repeat is byte-identical
  replays_bad: ['count==0'], // a repeat is a 200 replay with the first answer, never a second write or a 409
  checks: ['rate==1'],
};
if (!ALLOW_5XX) thresholds.status_5xx = ['count==0'];
if (!ALLOW_5XX || RETRIES > 0) thresholds.reports_unacked = ['count==0'];

export const options = {
  vus: Number(__ENV.VUS || 20),
  duration: __ENV.DURATION || '15s',
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
};

// This VU's acknowledged reports: {key, body, answer} (module state is per VU).
const acknowledged = [];

export function setup() {
  for (const counter of Object.values(counters)) counter.add(0); // every counter appears in the summary
  return { run: __ENV.RUN_ID || `ingest-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}` };
}

function newReport() {
  const count = 1 + ((__VU * 7 + __ITER) % 12); // 1..12 metrics, so rows per report differ
  const metricsSummary = {};
  for (const name of METRIC_NAMES.slice(0, count)) {
    metricsSummary[name] = Math.round(Math.random() * 9999999) / 10000; // [0, 999.9999], four places
  }
  return {
    name: 'k6_ingest_load',
    variant: `vu${__VU}`,
    notes: `iteration ${__ITER}`,
    metricsSummary,
    metadata: { vu: __VU, iteration: __ITER, vus: options.vus, duration: options.duration },
  };
}

function countStatus(res) {
  if (res.status === 201) counters.status_201.add(1);
  else if (res.status === 200) counters.status_200.add(1);
  else if (res.status >= 500) counters.status_5xx.add(1);
  else counters.status_other.add(1);
  if (res.status === 503 && /^\d+$/.test(res.headers['Retry-After'] || '')) counters.status_503_retry_after.add(1);
}

// POST with the retry rule: 5xx or no answer -> wait (Retry-After, bounded) and send the same bytes again.
function post(key, body, kind) {
  const params = {
    headers: { 'Content-Type': 'application/json', 'x-api-key': API_KEY, 'Idempotency-Key': key },
    tags: { name: 'POST /experiments/report', kind },
  };
  let res;
  for (let attempt = 0; attempt <= RETRIES; attempt++) {
    res = http.post(`${API_URL}/experiments/report`, body, params);
    countStatus(res);
    if (res.status !== 0 && res.status < 500) return res;
    if (attempt < RETRIES) {
      const wait = Number(res.headers['Retry-After']);
      sleep(Math.min(Number.isFinite(wait) && wait > 0 ? wait : 1, MAX_RETRY_WAIT_S));
    }
  }
  return res;
}

function idsOf(res) {
  try {
    const ids = res.json('ids');
    return ids && typeof ids === 'object' ? Object.keys(ids).length : 0;
  } catch (e) {
    return 0;
  }
}

export default function (data) {
  const repeat = REPEAT_EVERY > 0 && __ITER % REPEAT_EVERY === REPEAT_EVERY - 1 && acknowledged.length > 0;
  if (repeat) {
    const earlier = acknowledged[Math.floor(Math.random() * acknowledged.length)];
    const res = post(earlier.key, earlier.body, 'repeat');
    if (res.status === 0 || res.status >= 500) {
      counters.replays_unacked.add(1);
      return;
    }
    const ok = check(res, {
      'repeat: 200 replay with the first answer': (r) =>
        r.status === 200 && r.headers['Idempotent-Replayed'] === 'true' && r.body === earlier.answer,
    });
    (ok ? counters.replays_ok : counters.replays_bad).add(1);
    return;
  }

  const report = newReport();
  const metrics = Object.keys(report.metricsSummary).length;
  const key = `${data.run}-${__VU}-${__ITER}`;
  const body = JSON.stringify(report);
  const res = post(key, body, 'new');
  if (res.status === 201) counters.metrics_in_201.add(idsOf(res));
  if (res.status === 0 || res.status >= 500) {
    counters.reports_unacked.add(1);
    return;
  }
  // A 200 here is a retry whose first attempt was stored but its answer lost: a replay, still one report.
  const acked = check(res, {
    'new report: 201, or a 200 replay after a retry, with one id per metric': (r) =>
      (r.status === 201 || (r.status === 200 && RETRIES > 0)) && idsOf(r) === metrics,
  });
  if (acked) {
    counters.reports_acked.add(1);
    counters.metrics_acked.add(metrics);
    acknowledged.push({ key, body, answer: res.body });
  }
}
