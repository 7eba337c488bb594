/// Screens generated text as it streams, so a server can end a stream before it sends text that
/// the policy blocks.
///
/// Feed it each new text delta. It holds text back until at least `chunkCharacters` new
/// characters are pending, then checks a window — the last `overlapCharacters` of the text
/// already released plus the pending text — and either releases the pending text or blocks.
/// The overlap lets a term or number split across two chunks still be seen whole. Text held back
/// is never released once the screen has blocked. It knows nothing about the model producing the
/// text: any ``SafetyChecker`` (and any backends) can judge the windows.
public struct OutputScreen: Sendable {
  /// What the caller may do after a delta.
  public enum Decision: Sendable, Equatable {
    /// Send this text (possibly empty: the delta is held back until more arrives).
    case release(String)
    /// Stop the stream; nothing more may be sent. The verdict names the blocking categories.
    case block(SafetyVerdict)
  }

  public let checker: SafetyChecker
  public let profile: String?
  /// The prompt the output answers, given to the guard model as context.
  public let prompt: String?
  /// New characters needed before a window is checked (1 checks after every delta).
  public let chunkCharacters: Int
  /// Characters of already released text checked again at the start of each window.
  public let overlapCharacters: Int

  private var releasedTail = ""
  private var pending = ""
  private var blocked: SafetyVerdict?
  /// Categories flagged (with action `flag`) in any window so far, sorted.
  public private(set) var flaggedCategories: [SafetyCategory] = []
  /// Windows checked so far.
  public private(set) var windowsChecked = 0

  /// - Parameters:
  ///   - checker: judges each window as an assistant response.
  ///   - profile: the policy profile, nil for the default.
  ///   - prompt: the prompt being answered.
  ///   - chunkCharacters: at least 1.
  ///   - overlapCharacters: at least 0.
  public init(
    checker: SafetyChecker, profile: String? = nil, prompt: String? = nil,
    chunkCharacters: Int = 64, overlapCharacters: Int = 192
  ) {
    self.checker = checker
    self.profile = profile
    self.prompt = prompt
    self.chunkCharacters = max(1, chunkCharacters)
    self.overlapCharacters = max(0, overlapCharacters)
  }

  /// Whether the screen has blocked.
  public var isBlocked: Bool { blocked != nil }

  /// Adds a delta; checks a window when enough text is pending.
  /// - Throws: what ``SafetyChecker/check(_:profile:)`` throws.
  public mutating func feed(_ delta: String) async throws -> Decision {
    if let blocked { return .block(blocked) }
    pending += delta
    guard pending.count >= chunkCharacters else { return .release("") }
    return try await screenPending()
  }

  /// Checks whatever is still held back; call once when generation ends.
  /// - Throws: what ``SafetyChecker/check(_:profile:)`` throws.
  public mutating func finish() async throws -> Decision {
    if let blocked { return .block(blocked) }
    guard !pending.isEmpty else { return .release("") }
    return try await screenPending()
  }

  private mutating func screenPending() async throws -> Decision {
    let window = releasedTail + pending
    let verdict = try await checker.check(
      [SafetyInput(text: window, context: prompt, role: .assistant)], profile: profile)[0]
    windowsChecked += 1
    if verdict.action == .block {
      blocked = verdict
      pending = ""
      return .block(verdict)
    }
    if !verdict.flaggedCategories.isEmpty {
      flaggedCategories = Set(flaggedCategories + verdict.flaggedCategories).sorted()
    }
    let text = pending
    pending = ""
    releasedTail = String(window.suffix(overlapCharacters))
    return .release(text)
  }
}
