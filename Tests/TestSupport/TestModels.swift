import Foundation
import Synchronization

/// Where the tests find the repository, its fixtures and the default models.
///
/// Models come from `ALIGND_MODELS_DIR` when it is set (as for the server, the fetch scripts and
/// the server tests), else from `<repository>/models`: every suite looks in the same place.
public enum TestModels {
  /// The repository root, found from this file's location (symlinks resolved).
  public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  /// `Tests/Fixtures`.
  public static var fixtures: URL { repositoryRoot.appendingPathComponent("Tests/Fixtures") }

  /// A fixture's path under `Tests/Fixtures`.
  public static func fixture(_ path: String) -> String { fixtures.appendingPathComponent(path).path }

  /// The folder of the default models.
  public static var directory: URL {
    if let override = ProcessInfo.processInfo.environment["ALIGND_MODELS_DIR"], !override.isEmpty {
      return URL(fileURLWithPath: override)
    }
    return repositoryRoot.appendingPathComponent("models")
  }

  /// The default policy (SmolLM2-135M-Instruct, GGUF Q4_1).
  public static var defaultPolicy: String {
    directory.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf").path
  }

  /// Whether the default policy has been fetched (scripts/fetch-models.sh).
  public static var defaultPolicyPresent: Bool { FileManager.default.fileExists(atPath: defaultPolicy) }

  /// Why a test that needs the default policy is skipped.
  public static let defaultPolicyMissing =
    "the default model is not in $ALIGND_MODELS_DIR or models/ (scripts/fetch-models.sh)"

  /// A tiny random causal language model with a tokenizer and no chat template (the guard-model
  /// fixture): a real policy for fast tests of serving plumbing, whose text means nothing.
  public static var tinyPolicy: String { fixture("safety/tiny-guard") }
}

/// The other things the suites need, found where the set-up (`scripts/test.sh`, or its steps run
/// by hand) puts them, so a bare `swift test` after the set-up runs every suite instead of
/// skipping what it did not find.
public enum TestEnvironment {
  static let environment = ProcessInfo.processInfo.environment

  /// The cache folder of the set-up scripts (`ALIGND_CACHE_DIR`, default `<repository>/.build-cache`).
  public static var cacheDirectory: URL {
    if let override = environment["ALIGND_CACHE_DIR"], !override.isEmpty { return URL(fileURLWithPath: override) }
    return TestModels.repositoryRoot.appendingPathComponent(".build-cache")
  }

  /// The pinned test venv's python (`scripts/test-python-env.sh`), or `ALIGND_TEST_PYTHON`.
  public static var python: String {
    if let override = environment["ALIGND_TEST_PYTHON"], !override.isEmpty { return override }
    return cacheDirectory.appendingPathComponent("venv-test/bin/python").path
  }

  public static var pythonPresent: Bool { FileManager.default.isExecutableFile(atPath: python) }

  public static let pythonMissing = "the test venv is missing: run scripts/test-python-env.sh (or set ALIGND_TEST_PYTHON)"

  /// `ALIGND_SKIP_POSTGRES=1` leaves the PostgreSQL variants out (they are not run, and not reported as passed).
  public static var skipPostgres: Bool { environment["ALIGND_SKIP_POSTGRES"] == "1" }

  /// The store kinds a store-parameterized test runs on.
  public static var storeKinds: [String] { skipPostgres ? ["sqlite"] : ["sqlite", "postgres"] }

  /// The PostgreSQL server for the tests: `ALIGND_TEST_POSTGRES_URL`, else the one
  /// `scripts/start-test-postgres.sh` starts (same user, port and database).
  public static var postgresURL: String {
    if let url = environment["ALIGND_TEST_POSTGRES_URL"], !url.isEmpty { return url }
    let port = environment["ALIGND_TEST_POSTGRES_PORT"] ?? "54329"
    return "postgres://alignd_test:alignd_test@127.0.0.1:\(port)/alignd_test?sslmode=disable"
  }

  /// How to get the PostgreSQL server the tests need.
  public static let postgresHint =
    "start the test server with eval \"$(scripts/start-test-postgres.sh)\" (or set ALIGND_SKIP_POSTGRES=1 to leave the PostgreSQL variants out)"
}

/// A value shared by a test and the concurrent work it watches.
public final class Locked<Value: Sendable>: Sendable {
  private let storage: Mutex<Value>
  public init(_ value: Value) { storage = Mutex(value) }
  public var value: Value { storage.withLock { $0 } }
  public func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { storage.withLock { body(&$0) } }
}
