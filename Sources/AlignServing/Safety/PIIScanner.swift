/// A piece of personal data found in a text.
public struct PIIMatch: Sendable, Equatable {
  public var category: SafetyCategory
  /// The matched characters as written (UTF-8 byte range into the scanned text).
  public var range: Range<Int>
  /// A short kind name: `email`, `phone`, `card`, `us_ssn`, `uk_nino`, `es_dni`.
  public var kind: String
}

/// Finds e-mail addresses, phone numbers, payment card numbers and national id numbers by plain
/// scanning over the UTF-8 bytes (no regular-expression engine, linear in the text length).
///
/// Recognised forms (Docs/SAFETY.md lists them with examples):
/// - e-mail: `local@domain.tld`, local part of letters, digits and `._%+-`, dotted domain labels,
///   a final label of at least two letters;
/// - phone: US `(555) 234-5678`, `555-234-5678`, `555.234.5678`, `555 234 5678` with an optional
///   `1`/`+1` prefix (area code and exchange starting 2–9); international `+CC …` with 8–15 digits;
///   national numbers with a trunk `0` and 10–11 digits in at least two groups separated all by
///   spaces or all by hyphens (`020 7946 0958`);
/// - payment cards: 13–19 digits, contiguous or in groups of 3+ separated by one kind of space or
///   hyphen, passing the Luhn check;
/// - national ids: US SSN `AAA-GG-SSSS` / `AAA GG SSSS` (not area 000, 666 or 9xx, group 00,
///   serial 0000); UK National Insurance number `AB 12 34 56 C` (valid prefix letters, suffix
///   A–D); Spanish DNI `12345678Z` with its check letter.
public enum PIIScanner {
  /// Every match in `text`, in order of position.
  public static func scan(_ text: String) -> [PIIMatch] {
    var bytes = Array(text.utf8)
    bytes.append(0)  // a sentinel so look-ahead never runs off the end
    let n = bytes.count - 1
    var out: [PIIMatch] = []
    bytes.withUnsafeBufferPointer { b in
      scanEmails(b, n, &out)
      scanNumbers(b, n, &out)
      scanUKNINO(b, n, &out)
      scanSpanishDNI(b, n, &out)
    }
    return out.sorted { $0.range.lowerBound < $1.range.lowerBound }
  }

  /// `text` with every match replaced by `[REDACTED:<kind>]`, or nil when nothing matched.
  public static func redact(_ text: String) -> String? {
    let matches = scan(text)
    guard !matches.isEmpty else { return nil }
    let bytes = Array(text.utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var position = 0
    for match in matches where match.range.lowerBound >= position {
      out += bytes[position..<match.range.lowerBound]
      out += Array("[REDACTED:\(match.kind)]".utf8)
      position = match.range.upperBound
    }
    out += bytes[position...]
    return String(decoding: out, as: UTF8.self)
  }

  /// The Luhn (mod 10) check over a string of ASCII digits; false for anything else or empty.
  public static func luhnValid(_ digits: some StringProtocol) -> Bool {
    var sum = 0
    var double = false
    var count = 0
    for c in digits.utf8.reversed() {
      guard c >= 0x30, c <= 0x39 else { return false }
      var d = Int(c - 0x30)
      if double {
        d *= 2
        if d > 9 { d -= 9 }
      }
      sum += d
      double.toggle()
      count += 1
    }
    return count > 0 && sum % 10 == 0
  }

  // MARK: - Character classes

  @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
  @inline(__always) static func isLetter(_ c: UInt8) -> Bool { (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A }
  @inline(__always) static func isAlnum(_ c: UInt8) -> Bool { isDigit(c) || isLetter(c) }
  /// Part of a word for boundary checks: ASCII letters, digits, `_`, and any non-ASCII byte
  /// (so a match never starts or ends inside a non-Latin word).
  @inline(__always) static func isWordByte(_ c: UInt8) -> Bool { isAlnum(c) || c == 0x5F || c >= 0x80 }

  // MARK: - E-mail

  private static func isLocal(_ c: UInt8) -> Bool {
    isAlnum(c) || c == 0x2E || c == 0x5F || c == 0x25 || c == 0x2B || c == 0x2D
  }

  private static func scanEmails(_ b: UnsafeBufferPointer<UInt8>, _ n: Int, _ out: inout [PIIMatch]) {
    var i = 0
    var consumedUntil = 0
    while i < n {
      defer { i += 1 }
      guard b[i] == 0x40, i >= consumedUntil else { continue }  // '@'
      var start = i
      while start > consumedUntil, isLocal(b[start - 1]) { start -= 1 }
      while start < i, b[start] == 0x2E { start += 1 }  // no leading dot
      guard start < i, b[i - 1] != 0x2E else { continue }
      if start > 0, b[start - 1] >= 0x80 { continue }
      // Domain: labels of [A-Za-z0-9-] joined by single dots; the last label has 2+ letters only.
      var j = i + 1
      var labelStart = j
      var lastLabel: Range<Int>? = nil
      var labels = 0
      while true {
        while isAlnum(b[j]) || b[j] == 0x2D { j += 1 }
        guard j > labelStart, b[labelStart] != 0x2D, b[j - 1] != 0x2D else { break }
        labels += 1
        lastLabel = labelStart..<j
        if b[j] == 0x2E, isAlnum(b[j + 1]) {
          j += 1
          labelStart = j
          continue
        }
        break
      }
      guard labels >= 2, let last = lastLabel, last.count >= 2, last.allSatisfy({ isLetter(b[$0]) }) else {
        continue
      }
      let end = last.upperBound
      guard !isWordByte(b[end]) else { continue }
      out.append(PIIMatch(category: .piiEmail, range: start..<end, kind: "email"))
      consumedUntil = end
      i = end - 1
    }
  }

  // MARK: - Digit groups (phones, cards, SSN)

  /// A run of ASCII digits and the separator before it.
  private struct Group {
    var range: Range<Int>
    var gap: UInt32  // separator bytes between the previous group and this one, packed little-endian
  }

  /// Separators packed as `Group.gap` values.
  private enum Gap {
    static let space: UInt32 = 0x20
    static let hyphen: UInt32 = 0x2D
    static let dot: UInt32 = 0x2E
    static let spacedHyphen: UInt32 = 0x20_2D_20  // " - "
    static let close: UInt32 = 0x29  // ")"
    static let closeSpace: UInt32 = 0x20_29  // ") "
    static let closeHyphen: UInt32 = 0x2D_29  // ")-"
    static let spaceOpen: UInt32 = 0x28_20  // " ("
    static let open: UInt32 = 0x28  // "("
    static let allowed: Set<UInt32> = [space, hyphen, dot, spacedHyphen, close, closeSpace, closeHyphen, spaceOpen, open]
    static func isPlain(_ g: UInt32) -> Bool { g == space || g == hyphen || g == dot }
  }

  private static func scanNumbers(_ b: UnsafeBufferPointer<UInt8>, _ n: Int, _ out: inout [PIIMatch]) {
    var i = 0
    while i < n {
      guard isDigit(b[i]), i == 0 || !isWordByte(b[i - 1]) else {
        i += 1
        continue
      }
      // Collect a chain of digit groups joined by allowed gaps.
      var chain: [Group] = []
      var j = i
      var gap: UInt32 = 0
      while true {
        let s = j
        while isDigit(b[j]) { j += 1 }
        chain.append(Group(range: s..<j, gap: gap))
        var k = j
        while k < n, k - j < 3, b[k] == 0x20 || b[k] == 0x2D || b[k] == 0x2E || b[k] == 0x28 || b[k] == 0x29 {
          k += 1
        }
        var candidate: UInt32 = 0
        for (shift, index) in (j..<k).enumerated() { candidate |= UInt32(b[index]) << (8 * UInt32(shift)) }
        guard k > j, isDigit(b[k]), Gap.allowed.contains(candidate) else { break }
        gap = candidate
        j = k
      }
      var digitsBefore = [0]  // (groups + 1) prefix sums of group lengths
      for g in chain { digitsBefore.append(digitsBefore.last! + g.range.count) }
      var a = 0
      while a < chain.count {
        var matched: (end: Int, match: PIIMatch)? = nil
        // No pattern spans more than 8 groups or 8–19 digits, which keeps long chains linear.
        for e in stride(from: min(chain.count - 1, a + 7), through: a, by: -1) {
          guard (8...19).contains(digitsBefore[e + 1] - digitsBefore[a]) else { continue }
          if let m = classify(b, chain, a, e) {
            matched = (e, m)
            break
          }
        }
        if let matched {
          out.append(matched.match)
          a = matched.end + 1
        } else {
          a += 1
        }
      }
      i = chain.last!.range.upperBound
      while i < n, isWordByte(b[i]) { i += 1 }
    }
  }

  /// Whether groups a...e of `chain` form a card, SSN or phone number. The chain's start was
  /// checked for a word boundary; a later group is preceded by its separator.
  private static func classify(
    _ b: UnsafeBufferPointer<UInt8>, _ chain: [Group], _ a: Int, _ e: Int
  ) -> PIIMatch? {
    let groups = Array(chain[a...e])
    let first = groups.first!.range
    let last = groups.last!.range
    if isWordByte(b[last.upperBound]) { return nil }
    let lengths = groups.map(\.range.count)
    let digitCount = lengths.reduce(0, +)
    let innerGaps = groups.dropFirst().map(\.gap)
    var digits: [UInt8] = []
    digits.reserveCapacity(digitCount)
    for g in groups { digits.append(contentsOf: b[g.range]) }
    let before: UInt8 = first.lowerBound > 0 ? b[first.lowerBound - 1] : 0
    let plus = a == 0 && before == 0x2B
    let openParen = before == 0x28
    let spanStart = plus || openParen ? first.lowerBound - 1 : first.lowerBound
    let span = spanStart..<last.upperBound

    // Payment card: 13–19 digits, one separator kind (space or hyphen), groups of 3+.
    if !plus, !openParen, (13...19).contains(digitCount),
      innerGaps.allSatisfy({ $0 == innerGaps.first! && ($0 == Gap.space || $0 == Gap.hyphen) }),
      lengths.count == 1 || lengths.allSatisfy({ $0 >= 3 }),
      luhnValid(String(decoding: digits, as: UTF8.self))
    {
      return PIIMatch(category: .piiCreditCard, range: span, kind: "card")
    }
    // US SSN: 3-2-4 with two equal separators (hyphen or space).
    if !plus, !openParen, lengths == [3, 2, 4], innerGaps[0] == innerGaps[1],
      innerGaps[0] == Gap.hyphen || innerGaps[0] == Gap.space
    {
      let area = Int(String(decoding: digits[0..<3], as: UTF8.self))!
      let group = Int(String(decoding: digits[3..<5], as: UTF8.self))!
      let serial = Int(String(decoding: digits[5..<9], as: UTF8.self))!
      if area != 0, area != 666, area < 900, group != 0, serial != 0 {
        return PIIMatch(category: .piiNationalID, range: span, kind: "us_ssn")
      }
      return nil
    }
    // US / NANP: [1] NXX NXX XXXX, the area code optionally in parentheses.
    let offset = lengths.count == 4 && lengths[0] == 1 && digits[0] == 0x31 ? 1 : 0
    if Array(lengths[offset...]) == [3, 3, 4], digits[offset] >= 0x32, digits[offset + 3] >= 0x32 {
      let areaGap = groups[offset].gap
      let exchangeGap = groups[offset + 1].gap
      let lineGap = groups[offset + 2].gap
      let opened = offset == 0 ? openParen : areaGap == Gap.spaceOpen || areaGap == Gap.open
      let closed = exchangeGap & 0xFF == 0x29
      let prefixOK = offset == 0 || opened || Gap.isPlain(areaGap)
      let exchangeOK = opened ? closed : Gap.isPlain(exchangeGap)
      if prefixOK, exchangeOK, opened == closed, Gap.isPlain(lineGap) {
        return PIIMatch(category: .piiPhone, range: span, kind: "phone")
      }
    }
    // International: +CC then 8–15 digits in total.
    if plus, (8...15).contains(digitCount), lengths.count == 1 || lengths[0] <= 3, digits[0] != 0x30 {
      return PIIMatch(category: .piiPhone, range: span, kind: "phone")
    }
    // National with a trunk 0: 10–11 digits in 2+ groups of 2+, all spaces or all hyphens, at
    // the start of the digit run (so "2024-01-15 100 200" is not read as "01-15 100 200").
    if a == 0, !plus, !openParen, (10...11).contains(digitCount), digits[0] == 0x30, digits[1] != 0x30,
      lengths.count >= 2, lengths.allSatisfy({ $0 >= 2 }),
      innerGaps.allSatisfy({ $0 == innerGaps[0] && ($0 == Gap.space || $0 == Gap.hyphen) })
    {
      return PIIMatch(category: .piiPhone, range: span, kind: "phone")
    }
    return nil
  }

  // MARK: - UK National Insurance number

  /// Prefix letters HMRC never issues as the first or second letter.
  private static let ninoBadFirst: Set<UInt8> = Set("DFIQUV".utf8)
  private static let ninoBadSecond: Set<UInt8> = Set("DFIOQUV".utf8)
  private static let ninoBadPrefixes: Set<[UInt8]> = Set(["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"].map { Array($0.utf8) })

  private static func scanUKNINO(_ b: UnsafeBufferPointer<UInt8>, _ n: Int, _ out: inout [PIIMatch]) {
    var i = 0
    while i + 9 <= n {
      defer { i += 1 }
      guard i == 0 || !isWordByte(b[i - 1]) else { continue }
      let c0 = b[i] & ~0x20, c1 = b[i + 1] & ~0x20
      guard isLetter(b[i]), isLetter(b[i + 1]), !ninoBadFirst.contains(c0), !ninoBadSecond.contains(c1),
        !ninoBadPrefixes.contains([c0, c1])
      else { continue }
      // Six digits, optionally as three pairs separated by single spaces, then A–D.
      var j = i + 2
      var spaced: Bool? = nil
      var ok = true
      for pair in 0..<3 {
        if b[j] == 0x20 {
          if spaced == false { ok = false; break }
          if pair == 0 { spaced = true } else if spaced != true { ok = false; break }
          j += 1
        } else if pair == 0 {
          spaced = false
        } else if spaced == true {
          ok = false
          break
        }
        guard isDigit(b[j]), isDigit(b[j + 1]) else { ok = false; break }
        j += 2
      }
      guard ok else { continue }
      if spaced == true, b[j] == 0x20 { j += 1 }
      let suffix = b[j] & ~0x20
      guard isLetter(b[j]), suffix >= 0x41, suffix <= 0x44, !isWordByte(b[j + 1]) else { continue }
      out.append(PIIMatch(category: .piiNationalID, range: i..<(j + 1), kind: "uk_nino"))
      i = j
    }
  }

  // MARK: - Spanish DNI

  private static let dniLetters = Array("TRWAGMYFPDXBNJZSQVHLCKE".utf8)

  private static func scanSpanishDNI(_ b: UnsafeBufferPointer<UInt8>, _ n: Int, _ out: inout [PIIMatch]) {
    var i = 0
    while i + 9 <= n {
      defer { i += 1 }
      guard i == 0 || !isWordByte(b[i - 1]) else { continue }
      var j = i
      var value = 0
      while j < i + 8, isDigit(b[j]) {
        value = value * 10 + Int(b[j] - 0x30)
        j += 1
      }
      guard j == i + 8 else { continue }
      if b[j] == 0x2D { j += 1 }  // "12345678-Z"
      guard isLetter(b[j]), !isWordByte(b[j + 1]), b[j] & ~0x20 == dniLetters[value % 23] else { continue }
      out.append(PIIMatch(category: .piiNationalID, range: i..<(j + 1), kind: "es_dni"))
      i = j
    }
  }
}
