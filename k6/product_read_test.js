// Product read experiment: GET {BASE_URL}/products/{PRODUCT_ID} and the product list GET {BASE_URL}/products,
// with VUS virtual users for DURATION.
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
// Each request is tagged with its endpoint (`name`), and each endpoint has a threshold of its own, so the summary
// carries per-endpoint figures (http_req_duration{name:GET /products/:id} and {name:GET /products}). The custom
// Rate `cache_hit_rate` counts the answers the service's cache served (header X-Cache: HIT): the experiment's own
// figure, about 0 for the baseline and about 1 for the cached run.
// The summary's trend stats include p(50), p(90), p(95) and p(99) so the reporter can send all of them.
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:3000').replace(/\/+$/, '');
const PRODUCT_ID = __ENV.PRODUCT_ID || '123';
const P95_MS = Number(__ENV.P95_MS || 500);
const MAX_ERROR_RATE = Number(__ENV.MAX_ERROR_RATE || 0.01);
const PRODUCT = 'GET /products/:id';
const LIST = 'GET /products';

const cacheHitRate = new Rate('cache_hit_rate');

export const options = {
  vus: Number(__ENV.VUS || 20),
  duration: __ENV.DURATION || '30s',
  thresholds: {
    http_req_duration: [`p(95)<${P95_MS}`],
    [`http_req_duration{name:${PRODUCT}}`]: [`p(95)<${P95_MS}`],
    [`http_req_duration{name:${LIST}}`]: [`p(95)<${P95_MS * 4}`],
    http_req_failed: [`rate<${MAX_ERROR_RATE}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)'],
};

function read(url, name) {
  const res = http.get(url, { tags: { name } });
  check(res, { 'status is 200': (r) => r.status === 200 });
  if (res.status === 200) {
    cacheHitRate.add(res.headers['X-Cache'] === 'HIT');
  }
}

export default function () {
  read(`${BASE_URL}/products/${encodeURIComponent(PRODUCT_ID)}`, PRODUCT);
  read(`${BASE_URL}/products`, LIST);
}
