// k6 scenario for users: /invocations against a running gateway, 1-row or N-row bodies.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e VUS=64 -e DURATION=60s loadtest/k6_invocations.js
//   k6 run -e ROWS=100 -e VUS=16 loadtest/k6_invocations.js
//
// INVOCATIONS_PATH picks the endpoint (default /invocations), BODY_FILE a request body (default:
// one iris row as dataframe_split; the path is relative to this script), ROWS the rows per request
// (the body's rows repeated in turn). Each answer must be a 200 with one prediction per row.
// Thresholds fail the run when more than 0.1% of requests fail or p99 latency exceeds P99_MS
// (default 50 ms).
import http from "k6/http";
import { check } from "k6";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8080";
const PATH = __ENV.INVOCATIONS_PATH || "/invocations";
const PAYLOAD = __ENV.BODY_FILE
  ? JSON.parse(open(__ENV.BODY_FILE))
  : {
      dataframe_split: {
        columns: ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        data: [[5.1, 3.5, 1.4, 0.2]],
      },
    };
const SOURCE_ROWS = PAYLOAD.dataframe_split.data;
const ROWS = Number(__ENV.ROWS || SOURCE_ROWS.length);
const BODY = JSON.stringify({
  ...PAYLOAD,
  dataframe_split: {
    ...PAYLOAD.dataframe_split,
    data: Array.from({ length: ROWS }, (_, i) => SOURCE_ROWS[i % SOURCE_ROWS.length]),
  },
});
const PARAMS = { headers: { "Content-Type": "application/json" } };

export const options = {
  vus: Number(__ENV.VUS || 16),
  duration: __ENV.DURATION || "30s",
  thresholds: {
    http_req_failed: ["rate<0.001"],
    http_req_duration: [`p(99)<${Number(__ENV.P99_MS || 50)}`],
  },
};

export default function () {
  const res = http.post(`${BASE_URL}${PATH}`, BODY, PARAMS);
  check(res, {
    "status is 200": (r) => r.status === 200,
    "one prediction per row": (r) => {
      try {
        return JSON.parse(r.body).predictions.length === ROWS;
      } catch (e) {
        return false;
      }
    },
  });
}
