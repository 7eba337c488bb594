/// GPT-2's reversible mapping between bytes and printable characters: bytes that are printable
/// Latin-1 map to themselves, the others to U+0100 and up, in byte order.
enum ByteLevel {
  /// (256) the character each byte maps to.
  static let byteToScalar: [Unicode.Scalar] = {
    var table = [Unicode.Scalar](repeating: " ", count: 256)
    var next: UInt32 = 256
    for b in 0..<256 {
      let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
      if printable {
        table[b] = Unicode.Scalar(UInt8(b))
      } else {
        table[b] = Unicode.Scalar(next)!
        next += 1
      }
    }
    return table
  }()

  /// The byte a mapped character stands for, or nil if the character is not in the mapping.
  static func byte(for scalar: Unicode.Scalar) -> UInt8? {
    let v = scalar.value
    if (33...126).contains(v) || (161...172).contains(v) || (174...255).contains(v) { return UInt8(v) }
    guard v >= 256 && v < 256 + 68 else { return nil }
    return unmappedBytes[Int(v - 256)]
  }

  /// (68) the non-printable bytes in order; the n-th maps to U+0100 + n.
  private static let unmappedBytes: [UInt8] = (0..<256).compactMap { b in
    let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
    return printable ? nil : UInt8(b)
  }

  /// The raw bytes a byte-level token stands for. Like Hugging Face's ByteLevel decoder, a token with
  /// a character outside the mapping (e.g. an added token with non-Latin text) is its own UTF-8.
  static func decode(token: String) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(token.unicodeScalars.count)
    for s in token.unicodeScalars {
      guard let b = byte(for: s) else { return Array(token.utf8) }
      out.append(b)
    }
    return out
  }
}
