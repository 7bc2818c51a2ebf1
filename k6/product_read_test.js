// Product read experiment: hammer GET {BASE_URL}/products/{PRODUCT_ID} with VUS virtual users for DURATION.
//
//   BASE_URL=http://localhost:3000 PRODUCT_ID=123 VUS=20 DURATION=30s \
//     k6 run --summary-export=./results_baseline.json k6/product_read_test.js
//
// Every setting comes from the environment so the Makefile, CI and the tests run the same file unchanged:
//   BASE_URL        API base URL, without the trailing slash          (default http://localhost:3000)
//   PRODUCT_ID      product to read                                    (default 123)
//   VUS, DURATION   load shape                                         (default 20, 30s)
//   P95_MS          threshold: p(95) of http_req_duration below this   (default 500)
//   MAX_ERROR_RATE  threshold: share of failed requests below this     (default 0.01)
// The summary's trend stats include p(50), p(90), p(95) and p(99) so the reporter can send all of them.
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:3000').replace(/\/+$/, '');
const PRODUCT_ID = __ENV.PRODUCT_ID || '123';
const P95_MS = Number(__ENV.P95_MS || 500);
const MAX_ERROR_RATE = Number(__ENV.MAX_ERROR_RATE || 0.01);

export const options = {
  vus: Number(__ENV.VUS || 20),
  duration: __ENV.DURATION || '30s',
  thresholds: {
    http_req_duration: [`p(95)<${P95_MS}`],
    http_req_failed: [`rate<${MAX_ERROR_RATE}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)'],
};

export default function () {
  const res = http.get(`${BASE_URL}/products/${encodeURIComponent(PRODUCT_ID)}`, {
    tags: { name: 'GET /products/:id' },
  });
  check(res, { 'status is 200': (r) => r.status === 200 });
}
