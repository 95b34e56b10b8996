/// Just enough XML for S3's answers: the text of named elements, in document order. S3 responses
/// are flat, namespaced-by-default documents without CDATA or attributes that matter here.
enum XMLText {
    /// The inner text (raw, entities not decoded) of every `<name>...</name>` element.
    static func elements(_ name: String, in xml: String) -> [Substring] {
        var out = [Substring]()
        let open = "<\(name)>", close = "</\(name)>"
        var rest = xml[...]
        while let o = rest.range(of: open) {
            guard let c = rest.range(of: close, range: o.upperBound..<rest.endIndex) else { break }
            out.append(rest[o.upperBound..<c.lowerBound])
            rest = rest[c.upperBound...]
        }
        return out
    }

    /// The decoded text of the first `<name>` element.
    static func value(_ name: String, in xml: some StringProtocol) -> String? {
        elements(name, in: String(xml)).first.map { decode($0) }
    }

    static func decode(_ s: Substring) -> String {
        guard s.contains("&") else { return String(s) }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "&", let semi = s[i...].firstIndex(of: ";") {
                let entity = s[s.index(after: i)..<semi]
                var replacement: String?
                switch entity {
                case "amp": replacement = "&"
                case "lt": replacement = "<"
                case "gt": replacement = ">"
                case "quot": replacement = "\""
                case "apos": replacement = "'"
                default:
                    if entity.hasPrefix("#x"), let v = UInt32(entity.dropFirst(2), radix: 16), let u = Unicode.Scalar(v) { replacement = String(Character(u)) }
                    else if entity.hasPrefix("#"), let v = UInt32(entity.dropFirst()), let u = Unicode.Scalar(v) { replacement = String(Character(u)) }
                }
                if let replacement { out += replacement; i = s.index(after: semi); continue }
            }
            out.append(s[i])
            i = s.index(after: i)
        }
        return out
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(c)
            }
        }
        return out
    }
}
