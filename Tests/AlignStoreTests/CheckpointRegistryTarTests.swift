import AlignShared
import AlignStore
import Foundation
import Testing

/// The tar reader against hostile and malformed archives (built block by block here, or by GNU
/// tar), directly and through an upload; and the writer against GNU tar.
@Suite("CheckpointRegistry tar archives")
struct CheckpointRegistryTarTests {
  static let limits = TarExtractionLimits(maxTotalBytes: 1 << 20, maxEntries: 100)

  /// Extracts `archive` into a fresh folder inside `dir`; returns the folder.
  func extract(_ archive: Data, in dir: RegistryTestDir, limits: TarExtractionLimits = limits) throws -> (
    TarExtraction, String
  ) {
    let path = dir.scratch + "/\(UUID().uuidString).tar"
    try archive.write(to: URL(fileURLWithPath: path))
    let destination = dir.scratch + "/out-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: false)
    return (try TarArchive.extract(archiveAt: path, into: destination, limits: limits), destination)
  }

  func expectRefused(
    _ archive: Data, entry: String?, reasonContains: String, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let dir = try RegistryTestDir()
    let error = #expect(throws: CheckpointRegistryError.self, sourceLocation: sourceLocation) {
      _ = try extract(archive, in: dir)
    }
    guard case .invalidArchive(let actualEntry, let reason) = error else {
      Issue.record("got \(String(describing: error))", sourceLocation: sourceLocation)
      return
    }
    #expect(actualEntry == entry, sourceLocation: sourceLocation)
    #expect(reason.contains(reasonContains), "\(reason)", sourceLocation: sourceLocation)
    #expect(error?.category == .invalidArgument, sourceLocation: sourceLocation)
    // Nothing escaped beside the extraction folder or above it.
    #expect(!FileManager.default.fileExists(atPath: dir.scratch + "/evil"), sourceLocation: sourceLocation)
    #expect(!FileManager.default.fileExists(atPath: dir.base + "/evil"), sourceLocation: sourceLocation)
    #expect(!FileManager.default.fileExists(atPath: "/tmp/evil-\(Self.marker)"), sourceLocation: sourceLocation)
  }

  static let marker = "alignd-registry-test"

  @Test("entries with '..' components are refused", arguments: ["../evil", "a/../../evil", "a/b/../../../evil", ".."])
  func dotDot(name: String) throws {
    try expectRefused(RawTar.archive([.file(name, Data("x".utf8))]), entry: name, reasonContains: "\"..\"")
  }

  @Test("absolute entries are refused")
  func absolute() throws {
    let name = "/tmp/evil-\(Self.marker)"
    try expectRefused(RawTar.archive([.file(name, Data("x".utf8))]), entry: name, reasonContains: "absolute")
  }

  @Test(
    "links, devices and FIFOs are refused",
    arguments: [
      (UInt8(ascii: "2"), "symbolic link"), (UInt8(ascii: "1"), "hard link"), (UInt8(ascii: "3"), "device"),
      (UInt8(ascii: "4"), "device"), (UInt8(ascii: "6"), "FIFO"), (UInt8(ascii: "S"), "not supported"),
    ])
  func specialEntries(typeflag: UInt8, reason: String) throws {
    try expectRefused(
      RawTar.archive([.file("ok.txt", Data("x".utf8)), .raw("link", typeflag: typeflag, linkName: "/etc/passwd")]),
      entry: "link", reasonContains: reason)
  }

  @Test("a symlink made by GNU tar is refused, and nothing is written through it")
  func gnuTarSymlink() throws {
    let dir = try RegistryTestDir()
    let folder = dir.scratch + "/with-link"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(atPath: folder + "/escape", withDestinationPath: dir.base)
    try Data("x".utf8).write(to: URL(fileURLWithPath: folder + "/config.json"))
    let path = dir.scratch + "/link.tar"
    try RegistryFixtures.runTar(["--format=gnu", "-cf", path, "-C", folder, "."])
    try expectRefused(try Data(contentsOf: URL(fileURLWithPath: path)), entry: "./escape", reasonContains: "symbolic")
  }

  @Test("a hard link made by GNU tar is refused")
  func gnuTarHardLink() throws {
    let dir = try RegistryTestDir()
    let folder = dir.scratch + "/with-hardlink"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try Data("x".utf8).write(to: URL(fileURLWithPath: folder + "/a"))
    try FileManager.default.linkItem(atPath: folder + "/a", toPath: folder + "/b")
    let path = dir.scratch + "/hardlink.tar"
    try RegistryFixtures.runTar(["--format=gnu", "-cf", path, "-C", folder, "a", "b"])
    try expectRefused(try Data(contentsOf: URL(fileURLWithPath: path)), entry: "b", reasonContains: "hard link")
  }

  @Test("duplicate entries and file/folder clashes are refused")
  func duplicates() throws {
    try expectRefused(
      RawTar.archive([.file("config.json", Data("a".utf8)), .file("./config.json", Data("b".utf8))]),
      entry: "./config.json", reasonContains: "duplicate")
    try expectRefused(
      RawTar.archive([.directory("m/"), .directory("m")]), entry: "m", reasonContains: "duplicate")
    try expectRefused(
      RawTar.archive([.file("m", Data("a".utf8)), .directory("m/")]), entry: "m/", reasonContains: "duplicate")
    try expectRefused(
      RawTar.archive([.file("m", Data("a".utf8)), .file("m/x", Data("b".utf8))]), entry: "m/x",
      reasonContains: "parent m is a file")
  }

  @Test("malformed archives are refused")
  func malformed() throws {
    var corrupt = RawTar.archive([.file("a", Data("hello".utf8))])
    corrupt[0] = UInt8(ascii: "b")  // name changes, checksum no longer matches
    try expectRefused(corrupt, entry: nil, reasonContains: "checksum")

    let whole = RawTar.archive([.file("a", Data(repeating: 7, count: 3000))])
    try expectRefused(whole.prefix(512 + 1000), entry: "a", reasonContains: "truncated")
    try expectRefused(whole.prefix(300), entry: nil, reasonContains: "truncated")
    try expectRefused(Data(repeating: 0x41, count: 2048), entry: nil, reasonContains: "ustar")
    try expectRefused(Data(repeating: 0, count: 1024), entry: nil, reasonContains: "empty")
    try expectRefused(
      RawTar.archive([
        .longName("x"), .raw("y", typeflag: UInt8(ascii: "x"), linkName: "", data: Data("9 path\n".utf8)),
      ]), entry: "y", reasonContains: "pax")
  }

  @Test("size and entry limits are enforced")
  func limits() throws {
    let dir = try RegistryTestDir()
    let big = RawTar.archive([.file("a", Data(repeating: 1, count: 600)), .file("b", Data(repeating: 2, count: 600))])
    let sizeError = #expect(throws: CheckpointRegistryError.self) {
      _ = try extract(big, in: dir, limits: TarExtractionLimits(maxTotalBytes: 1000, maxEntries: 10))
    }
    guard case .archiveTooLarge = sizeError else {
      Issue.record("got \(String(describing: sizeError))")
      return
    }
    #expect(sizeError?.category == .resourceExhausted)

    let many = RawTar.archive((0..<5).map { .file("f\($0)", Data("x".utf8)) })
    let countError = #expect(throws: CheckpointRegistryError.self) {
      _ = try extract(many, in: dir, limits: TarExtractionLimits(maxTotalBytes: 1000, maxEntries: 4))
    }
    guard case .archiveTooLarge = countError else {
      Issue.record("got \(String(describing: countError))")
      return
    }
    #expect(
      try extract(many, in: dir, limits: TarExtractionLimits(maxTotalBytes: 1000, maxEntries: 5)).0.files.count == 5)
  }

  @Test("long names from GNU tar (gnu and pax formats) and from TarWriter extract intact")
  func longNames() throws {
    let dir = try RegistryTestDir()
    let folder = dir.scratch + "/long"
    let deep = String(repeating: "d", count: 120) + "/" + String(repeating: "e", count: 90)
    let flat = String(repeating: "f", count: 150) + ".safetensors"
    try FileManager.default.createDirectory(atPath: folder + "/" + deep, withIntermediateDirectories: true)
    let contents = Data((0..<1500).map { UInt8($0 % 251) })
    try contents.write(to: URL(fileURLWithPath: folder + "/" + deep + "/w.bin"))
    try contents.write(to: URL(fileURLWithPath: folder + "/" + flat))

    for flavour in ["gnu", "pax", "writer"] {
      let archive = try RegistryFixtures.archive(folder, flavour: flavour, wrappedInFolder: false, in: dir.scratch)
      let (result, out) = try extract(archive, in: dir)
      #expect(Set(result.files) == [deep + "/w.bin", flat], "\(flavour)")
      #expect(result.totalBytes == 3000)
      #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/" + deep + "/w.bin")) == contents, "\(flavour)")
      #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/" + flat)) == contents, "\(flavour)")
    }
  }

  @Test("TarWriter's archives list and extract the same with GNU tar")
  func writerReadByGNUTar() throws {
    let dir = try RegistryTestDir()
    let folder = try RegistryFixtures.huggingFaceFolder(in: dir.scratch)
    let archive = dir.scratch + "/w.tar"
    try TarWriter.archive(directory: folder, to: archive)
    let out = dir.scratch + "/gnu-out"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try RegistryFixtures.runTar(["-xf", archive, "-C", out])
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
      #expect(
        try Data(contentsOf: URL(fileURLWithPath: out + "/" + name))
          == Data(contentsOf: URL(fileURLWithPath: folder + "/" + name)))
    }
    let writer = try TarWriter(path: dir.scratch + "/refuse.tar")
    #expect(throws: TarWriterError.self) { try writer.addFile("../x", contents: Data()) }
    #expect(throws: TarWriterError.self) { try writer.addFile("/x", contents: Data()) }
    try writer.addFile("x", contents: Data())
    #expect(throws: TarWriterError.self) { try writer.addFile("x", contents: Data()) }
  }

  static let hostileEntries: [(RawTar.Entry, String)] = [
    (.file("../evil", Data("x".utf8)), "\"..\""),
    (.file("/tmp/evil-\(marker)", Data("x".utf8)), "absolute"),
    (.raw("escape", typeflag: UInt8(ascii: "2"), linkName: "../../.."), "symbolic"),
  ]

  @Test("an upload whose tar holds a hostile entry is refused; staging and registry untouched", arguments: 0..<3)
  func hostileUpload(index: Int) throws {
    let (hostile, reason) = Self.hostileEntries[index]
    let dir = try RegistryTestDir()
    let registry = try dir.registry()
    let folder = try RegistryFixtures.huggingFaceFolder(in: dir.scratch)
    _ = try upload(
      RegistryFixtures.archive(folder, flavour: "gnu", wrappedInFolder: false, in: dir.scratch), to: registry,
      role: .reward, name: "good", format: .hfSafetensors)
    let before = try dir.snapshot()
    var entries: [RawTar.Entry] = []
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
      entries.append(.file(name, try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))))
    }
    entries.append(hostile)
    let error = try failingUpload(
      RawTar.archive(entries), to: registry, role: .reward, name: "bad", format: .hfSafetensors)
    guard case .invalidArchive(_, let actual) = error else {
      Issue.record("got \(error)")
      return
    }
    #expect(actual.contains(reason))
    try expectUntouched(dir, before)
    #expect(!FileManager.default.fileExists(atPath: dir.base + "/evil"))
  }
}

/// Builds tar archives block by block, including entries no honest tool writes.
enum RawTar {
  enum Entry {
    case file(String, Data)
    case directory(String)
    case longName(String)
    case raw(String, typeflag: UInt8, linkName: String, data: Data = Data())
  }

  static func archive(_ entries: [Entry]) -> Data {
    var out = Data()
    for entry in entries {
      switch entry {
      case .file(let name, let data):
        append(name: name, typeflag: UInt8(ascii: "0"), linkName: "", data: data, to: &out)
      case .directory(let name):
        append(name: name, typeflag: UInt8(ascii: "5"), linkName: "", data: Data(), to: &out)
      case .longName(let name):
        append(name: "././@LongLink", typeflag: UInt8(ascii: "L"), linkName: "", data: Data(name.utf8) + [0], to: &out)
      case .raw(let name, let typeflag, let linkName, let data):
        append(name: name, typeflag: typeflag, linkName: linkName, data: data, to: &out)
      }
    }
    out.append(Data(repeating: 0, count: 1024))
    return out
  }

  /// One ustar header (name in the 100-byte field) followed by the padded data.
  static func append(name: String, typeflag: UInt8, linkName: String, data: Data, to out: inout Data) {
    var block = [UInt8](repeating: 0, count: 512)
    func put(_ string: String, at offset: Int) {
      for (index, byte) in string.utf8.enumerated() { block[offset + index] = byte }
    }
    put(name, at: 0)
    put("0000644", at: 100)
    put("0000000", at: 108)
    put("0000000", at: 116)
    let size = String(data.count, radix: 8)
    put(String(repeating: "0", count: 11 - size.count) + size, at: 124)
    put("00000000000", at: 136)
    block[156] = typeflag
    put(linkName, at: 157)
    put("ustar", at: 257)
    put("00", at: 263)
    for index in 148..<156 { block[index] = 0x20 }
    let sum = String(block.reduce(0) { $0 + Int($1) }, radix: 8)
    put(String(repeating: "0", count: 6 - sum.count) + sum, at: 148)
    block[154] = 0
    out.append(contentsOf: block)
    out.append(data)
    out.append(Data(repeating: 0, count: (512 - data.count % 512) % 512))
  }
}
