/// The names of alignd's metric series, in one place so that each name is registered with one
/// type and one set of label keys (swift-prometheus traps on a type clash) and so that the
/// Prometheus exporter's histogram buckets, the Grafana dashboard and Docs/METRICS.md agree.
public enum MetricNames {
  // Generation scheduler (ServingMetrics), labelled `model`.
  /// Gauge: requests waiting in the queue.
  public static let queueDepth = "alignd_queue_depth"
  /// Gauge: sequences decoding.
  public static let runningSequences = "alignd_running_sequences"
  /// Histogram: sequences per forward step.
  public static let batchSequences = "alignd_batch_sequences"
  /// Histogram: tokens per forward step.
  public static let batchTokens = "alignd_batch_tokens"
  /// Histogram (seconds): submission to first streamed token.
  public static let timeToFirstToken = "alignd_time_to_first_token_seconds"
  /// Histogram (seconds): gap between successive tokens of one sequence.
  public static let interTokenLatency = "alignd_inter_token_latency_seconds"
  /// Histogram (seconds): computing the token mask of one constrained (JSON) sampling step.
  public static let constraintMask = "alignd_constraint_mask_seconds"
  /// Counter: generated tokens.
  public static let generatedTokens = "alignd_generated_tokens_total"
  /// Counter: prompt tokens prefilled.
  public static let prefillTokens = "alignd_prefill_tokens_total"
  /// Counter: tokens prompt lookup proposed (speculative decoding).
  public static let draftedTokens = "alignd_speculative_drafted_tokens_total"
  /// Counter: proposed tokens kept (each equal to what the sampler drew).
  public static let acceptedDraftTokens = "alignd_speculative_accepted_tokens_total"
  /// Gauge: generated tokens per second of the last forward step.
  public static let decodeTokensPerSecond = "alignd_decode_tokens_per_second"
  /// Counter: requests refused at admission, labelled `model`, `reason`.
  public static let rejections = "alignd_rejections_total"
  /// Counter: requests that ended early, labelled `model`, `reason`.
  public static let requestsEndedEarly = "alignd_requests_ended_early_total"
  /// Prefix-cache lookups at submission, by result (hit, miss); their hit rate.
  public static let prefixLookups = "alignd_prefix_cache_lookups_total"
  /// Prompt tokens taken from the prefix cache instead of prefilled.
  public static let prefixCachedTokens = "alignd_prefix_cache_tokens_total"

  // Judging.
  /// Histogram: items per reward-model forward batch, labelled `reward_version`.
  public static let scoreBatchSize = "alignd_score_batch_size"
  /// Histogram: every reward returned to a client, labelled `reward_version`.
  public static let rewardScore = "alignd_reward_score"
  /// Counter: flagged categories of safety verdicts, labelled `category`, `policy_version`.
  public static let safetyFlags = "alignd_safety_flags_total"

  // Server.
  /// Counter: finished gRPC calls, labelled `method`, `code`.
  public static let grpcRequests = "alignd_grpc_requests_total"
  /// Histogram (seconds): gRPC call duration, labelled `method`.
  public static let grpcRequestDuration = "alignd_grpc_request_duration_seconds"
  /// Counter: checkpoint swaps, labelled `role`, `kind`, `outcome`.
  public static let swapEvents = "alignd_swap_events_total"
  /// Histogram (seconds): time to load and swap in a checkpoint, labelled `role`, `kind`.
  public static let swapDuration = "alignd_swap_duration_seconds"
  /// Counter: feedback records committed to the store, labelled `kind`.
  public static let feedbackRecords = "alignd_feedback_records_total"
  /// Counter: HTTP requests answered by the HTTP gateway, labelled `route`, `status`.
  public static let httpRequests = "alignd_http_requests_total"
  /// Counter: generation-log records by outcome (`written`, `dropped` when the queue was full,
  /// `failed` when the store refused a batch, `sampled_out`), labelled `outcome`.
  public static let generationLogRecords = "alignd_generation_log_records_total"
  /// Counter: generation-log entries removed by the retention pruner.
  public static let generationLogPruned = "alignd_generation_log_pruned_total"
  /// Counter: feedback submitted by apps (SubmitFeedback, POST /v1/feedback), labelled `outcome`.
  public static let appFeedback = "alignd_app_feedback_total"

  // Canary analysis (AlignRollout), gauges labelled `role`, `arm` (active, canary) over the
  // running comparison's window.
  /// Gauge: requests served in the window.
  public static let canaryRequests = "alignd_canary_requests"
  /// Gauge: share of the window's requests the server failed.
  public static let canaryErrorRate = "alignd_canary_error_rate"
  /// Gauge: share of safety-checked completions flagged.
  public static let canarySafetyFlagRate = "alignd_canary_safety_flag_rate"
  /// Gauge: mean reward of sampled completions.
  public static let canaryRewardMean = "alignd_canary_reward_mean"
  /// Gauge: sampled completions scored.
  public static let canaryRewardSamples = "alignd_canary_reward_samples"
  /// Gauge (seconds): mean time to first token.
  public static let canaryTimeToFirstToken = "alignd_canary_ttft_mean_seconds"
  /// Gauge (seconds): mean inter-token latency.
  public static let canaryInterTokenLatency = "alignd_canary_itl_mean_seconds"
  /// Gauge: the verdict so far, labelled `role`: 0 wait, 1 promote, -1 roll back.
  public static let canaryVerdict = "alignd_canary_verdict"
  /// Counter: decisions taken, labelled `role`, `decision` (promote, rollback), `reason` (the
  /// deciding signal: errors, safety_flags, reward, win_rate, rating, ttft, itl, inconclusive, passed).
  public static let canaryDecisions = "alignd_canary_decisions_total"
}
