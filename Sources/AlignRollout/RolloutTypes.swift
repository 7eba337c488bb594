import AlignStore

/// One activation gate's verdict.
public struct GateOutcome: Codable, Sendable, Equatable {
  public var name: String
  public var passed: Bool
  public var detail: String
}

/// The versions serving a role, as persisted in the store (so a restart, and every replica on a
/// shared PostgreSQL store, serves the same versions).
public struct PersistedRoleState: Codable, Sendable, Equatable {
  public var active: String?
  public var canary: String?
  public var canaryPercent: Int = 0
  public var previous: String?
}

/// The outcome of an admin operation, kept by operation id so a repeated request returns it.
public struct RolloutOutcome: Codable, Sendable {
  public var role: CheckpointRole
  public var state: PersistedRoleState
  public var gates: [GateOutcome]
  /// Set when the operation failed (its gates say why).
  public var failure: String?
}

/// Why an admin operation was refused; the server maps the kind to a status code.
public struct RolloutError: Error, CustomStringConvertible {
  public enum Kind: Sendable { case notFound, invalidArgument, failedPrecondition, unavailable }
  public var kind: Kind
  public var description: String
  public var gates: [GateOutcome] = []
}
