//! Every metric name cutover exports (SPEC §7), with its HELP text.

pub const REQUESTS_TOTAL: &str = "cutover_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "cutover_request_duration_seconds";
pub const TIME_TO_FIRST_BYTE_SECONDS: &str = "cutover_time_to_first_byte_seconds";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "cutover_upstream_requests_total";
pub const FALLBACKS_TOTAL: &str = "cutover_fallbacks_total";
pub const UPSTREAM_RETRIES_TOTAL: &str = "cutover_upstream_retries_total";
pub const REFUSALS_TOTAL: &str = "cutover_refusals_total";
pub const BREAKER_STATE: &str = "cutover_breaker_state";
pub const CONFIG_GENERATION: &str = "cutover_config_generation";
pub const CONFIG_RELOADS_TOTAL: &str = "cutover_config_reloads_total";
pub const TOKENS_TOTAL: &str = "cutover_tokens_total";
pub const COST_USD_TOTAL: &str = "cutover_cost_usd_total";
pub const OUTCOMES_TOTAL: &str = "cutover_outcomes_total";
pub const ROUTE_WEIGHT: &str = "cutover_route_weight";
pub const OVERHEAD_SECONDS: &str = "cutover_overhead_seconds";
// Issue 14: how requests were assigned, and what usage and compare skipped.
pub const ASSIGNMENTS_TOTAL: &str = "cutover_assignments_total";
pub const API_SKIPPED_TOTAL: &str = "cutover_api_skipped_total";
pub const COST_USD_TOTAL_HELP: &str =
    "Cost in USD of the tokens each version used, from its configured per-million-token prices.";
pub const TRACE_SPANS_DROPPED_TOTAL: &str = "cutover_trace_spans_dropped_total";
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "cutover_access_log_dropped_total";
pub const SHADOW_REQUESTS_TOTAL: &str = "cutover_shadow_requests_total";
pub const SHADOW_DURATION_SECONDS: &str = "cutover_shadow_duration_seconds";
pub const SHADOW_COMPARE_TOTAL: &str = "cutover_shadow_compare_total";
pub const SHADOW_TOKENS_TOTAL: &str = "cutover_shadow_tokens_total";
pub const SHADOW_COST_USD_TOTAL: &str = "cutover_shadow_cost_usd_total";
pub const SHADOW_COST_USD_TOTAL_HELP: &str =
    "Cost in USD of the tokens each shadow used, from its configured per-million-token prices.";
pub const ROLLOUT_STEP: &str = "cutover_rollout_step";
pub const ROLLOUT_STATE: &str = "cutover_rollout_state";
pub const ROLLBACKS_TOTAL: &str = "cutover_rollbacks_total";
pub const CACHE_REQUESTS_TOTAL: &str = "cutover_cache_requests_total";
pub const CACHE_BYTES: &str = "cutover_cache_bytes";
pub const SET_JSON_SKIPPED_TOTAL: &str = "cutover_set_json_skipped_total";
pub const CLUSTER_UP: &str = "cutover_cluster_up";
pub const CLUSTER_LEADER: &str = "cutover_cluster_leader";
pub const CLUSTER_REPLICAS: &str = "cutover_cluster_replicas";
pub const CLUSTER_ERRORS_TOTAL: &str = "cutover_cluster_errors_total";
pub const BUFFERED_BYTES: &str = "cutover_buffered_bytes";

/// (name, help) for every metric, registered once at start. A test checks
/// that every series `/metrics` exposes has HELP text.
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        REQUESTS_TOTAL,
        "Downstream responses by route, version and status class.",
    ),
    (
        REQUEST_DURATION_SECONDS,
        "Time from request start to the last response byte.",
    ),
    (
        TIME_TO_FIRST_BYTE_SECONDS,
        "Time from request start to the first response body byte.",
    ),
    (
        UPSTREAM_REQUESTS_TOTAL,
        "Upstream attempts by upstream and result.",
    ),
    (
        UPSTREAM_RETRIES_TOTAL,
        "Requests sent once more on a new connection, by upstream and reason (reused_closed: a reused keep-alive connection closed before any response byte).",
    ),
    (
        FALLBACKS_TOTAL,
        "Moves along a route's fallback chain, by the target failed from and the one tried next.",
    ),
    (
        REFUSALS_TOTAL,
        "Polite refusals served, by route and reason (exhausted, overload).",
    ),
    (
        TOKENS_TOTAL,
        "Tokens reported in response usage blocks, by route, version and kind (input, output).",
    ),
    (
        OUTCOMES_TOTAL,
        "Task outcomes (success, failure) by route and version, from the upstream's x-cutover-outcome header or client feedback.",
    ),
    (
        ROUTE_WEIGHT,
        "Effective traffic share of each version, in percent.",
    ),
    (
        OVERHEAD_SECONDS,
        "Time spent in cutover itself per request, waits on the client and upstreams excluded.",
    ),
    (
        CONFIG_RELOADS_TOTAL,
        "Config reload attempts by result (ok, error); a rejected config leaves the running one in place.",
    ),
    (
        CONFIG_GENERATION,
        "Generation of the config in force; increases by one on every successful reload.",
    ),
    (
        ACCESS_LOG_DROPPED_TOTAL,
        "Access-log lines dropped because the writer fell behind (the proxy never blocks on logging).",
    ),
    (
        TRACE_SPANS_DROPPED_TOTAL,
        "Trace spans dropped because the OTLP export queue was full (export never blocks requests).",
    ),
    (
        BREAKER_STATE,
        "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
    ),
    (
        SHADOW_REQUESTS_TOTAL,
        "Mirrored requests by route, shadow and result (ok, failure, dropped when the shadow's max_in_flight was full).",
    ),
    (
        SHADOW_DURATION_SECONDS,
        "Time from sending a mirror to the last byte of the shadow's response.",
    ),
    (
        SHADOW_COMPARE_TOTAL,
        "Comparisons of the configured JSON pointers between a shadow's answer and the primary's, by result (match, mismatch).",
    ),
    (
        SHADOW_TOKENS_TOTAL,
        "Tokens reported in shadow responses' usage blocks, by route, shadow and kind (input, output).",
    ),
    (
        CACHE_REQUESTS_TOTAL,
        "Requests on caching routes by result (hit, miss, bypass).",
    ),
    (
        CACHE_BYTES,
        "Bytes held by the response cache (bodies plus per-entry overhead).",
    ),
    (
        SET_JSON_SKIPPED_TOTAL,
        "Requests forwarded unchanged because set_json was configured but the body is not a JSON object.",
    ),
    (
        API_SKIPPED_TOTAL,
        "Responses (and stream events) that usage reading or shadow compare skipped, by route, use (usage, compare) and reason (malformed, wrong_shape, unknown_event, incomplete, error_event); the client's bytes are never changed.",
    ),
    (
        ASSIGNMENTS_TOTAL,
        "Requests by the way their version was chosen: sticky, unsticky, pinned, or session (a protocol session kept on its version).",
    ),
    (
        ROLLOUT_STEP,
        "Index of the rollout's current step in its steps list; -1 while shadowing or rolled back.",
    ),
    (
        ROLLOUT_STATE,
        "1 for the rollout's current state (shadowing, canary, paused, promoted, rolled_back), 0 for the others.",
    ),
    (
        ROLLBACKS_TOTAL,
        "Automatic and operator rollbacks by route and reason.",
    ),
    (
        CLUSTER_UP,
        "1 while the fleet's Redis answers this replica's sync rounds (with [cluster]).",
    ),
    (
        CLUSTER_LEADER,
        "1 on the replica that holds the lease and judges the fleet's rollouts.",
    ),
    (
        CLUSTER_REPLICAS,
        "Replicas of the fleet seen in Redis within the last three leases.",
    ),
    (
        CLUSTER_ERRORS_TOTAL,
        "Redis operations of the fleet that failed or passed their deadline, by operation.",
    ),
    (
        BUFFERED_BYTES,
        "Bytes of request bodies held in memory now (bounded by server.max_buffered).",
    ),
];

/// Histogram buckets for LLM latencies: a few ms (cache hits, refusals) to
/// minutes (long generations).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0, 300.0,
];
