// The harnesses run on Linux only (libFuzzer ships with the swift.org Linux toolchains).
import Glibc

/// The engine's file parsers take paths (they memory-map), so each fuzz input is written to a
/// per-process scratch file first (see `directory(named:)` for where).
public struct ScratchFile: Sendable {
  /// Path of the file (unique per process and name).
  public let path: String

  /// A scratch path `alignd-fuzz-<pid>-<name>` in /dev/shm (or $TMPDIR, or /tmp).
  public init(_ name: String) {
    path = ScratchFile.directory(named: name) + "/" + name
  }

  /// A fresh private folder for inputs that must be named files inside a folder (config.json, ...):
  /// `alignd-fuzz-<pid>-<name>` in $ALIGND_FUZZ_SCRATCH (scripts/fuzz.sh sets it and removes it
  /// afterwards), else /dev/shm, $TMPDIR or /tmp.
  public static func directory(named name: String) -> String {
    var base = "/tmp"
    if let s = getenv("ALIGND_FUZZ_SCRATCH") {
      base = String(cString: s)
      mkdir(base, 0o700)
    } else if access("/dev/shm", W_OK) == 0 {
      base = "/dev/shm"
    } else if let t = getenv("TMPDIR") {
      base = String(cString: t)
    }
    let dir = "\(base)/alignd-fuzz-\(getpid())-\(name)"
    mkdir(dir, 0o700)
    return dir
  }

  /// Replaces the file's contents with `size` bytes at `data` and returns the path.
  @discardableResult
  public func write(_ data: UnsafePointer<UInt8>?, _ size: Int) -> String {
    ScratchFile.write(path: path, data, size)
    return path
  }

  /// Replaces the contents of the file at `path`.
  public static func write(path: String, _ data: UnsafePointer<UInt8>?, _ size: Int) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot create fuzz scratch file \(path)")
    defer { close(fd) }
    var done = 0
    while done < size, let data {
      let n = Glibc.write(fd, data + done, size - done)
      precondition(n > 0, "cannot write fuzz scratch file \(path)")
      done += n
    }
  }

  /// Removes the file at `path` if present.
  public static func remove(path: String) { unlink(path) }
}

/// Locations in the alignd checkout, found from this source file's path (Fuzz/Sources/FuzzSupport/).
public enum Repository {
  /// The checkout root.
  public static let root: String = {
    var parts = String(#filePath).split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(4)  // FuzzSupport.swift, FuzzSupport, Sources, Fuzz
    return parts.joined(separator: "/")
  }()

  /// `path` inside the checkout.
  public static func path(_ relative: String) -> String { root + "/" + relative }

  /// Whether a regular file exists at `path`.
  public static func exists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
  }

  /// The whole contents of the file at `path`, or nil.
  public static func read(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if n < 0 { return nil }
      if n == 0 { break }
      out.append(contentsOf: buf[0..<n])
    }
    return out
  }
}

/// Stops the run with a message that libFuzzer records as a crash (used for broken properties,
/// e.g. a tokenizer round trip that changes the text).
public func fuzzFailure(_ message: String) -> Never {
  let line = Array("FUZZ PROPERTY FAILED: \(message)\n".utf8)
  _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
  abort()
}

/// The harness entry point libFuzzer calls for each input.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
  _ argc: UnsafeMutablePointer<CInt>,
  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
  _ callback: FuzzCallback
) -> CInt

/// Runs libFuzzer's driver (command line flags, corpus, crash files) over `callback`.
///
/// SwiftPM links Linux executables with `--defsym main=<module>_main`, which hides libFuzzer's own
/// `main`; each harness therefore defines `<module>_main` and calls this. Were `main` not renamed,
/// libFuzzer's `main` would run and this would simply go unused.
public func runLibFuzzer(
  _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ callback: FuzzCallback
) -> CInt {
  var argc = argc
  var argv = argv
  return LLVMFuzzerRunDriver(&argc, &argv, callback)
}
