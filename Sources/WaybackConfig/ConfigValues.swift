import Foundation
import WaybackCore
import Yams

/// The values of one configuration, flat (`repositories.1.bucket`), each checked against its key
/// in `ConfigSchema` when read in (file first, then `WAYBACK_*` variables over it), and read back
/// typed, with the table's default when absent. Errors are `.config` and name the key and where
/// its value came from (file and line, or variable).
struct ConfigValues {
    struct Value {
        var text: String
        /// Where it came from: `file:line`, or `environment variable NAME`.
        var origin: String
    }

    let file: String
    private(set) var values: [String: Value] = [:]

    init(file: String) { self.file = file }

    // MARK: reading in

    /// Reads the YAML text: every scalar stays text (the basic resolver: the default one compiles
    /// a dozen regular expressions on every start, milliseconds per `wal-push`), typed by the schema.
    mutating func read(yaml text: String) throws {
        let node: Node?
        do { node = try Yams.compose(yaml: text, .basic) } catch {
            throw WaybackError(.config, "\(file) is not valid YAML: \(Self.yamlReason(error))")
        }
        guard let node else { return }
        guard case .mapping = node else { throw WaybackError(.config, "\(file): the top level must be a mapping of keys (cluster:, repositories:, ...)") }
        try flatten(node, prefix: "")
        for (key, v) in values {
            guard let k = ConfigSchema.key(key) else {
                throw WaybackError(.config, "\(v.origin): unknown key '\(key)'; see docs/configuration.md for the keys")
            }
            try Self.check(v, key: k, name: key)
        }
    }

    /// `WAYBACK_*` variables over the file's values. A `WAYBACK_*` variable that names no key is an
    /// error (a typo must not be ignored), but for `ConfigSchema.variables` and `also`.
    mutating func overlay(environment: [String: String], also: Set<String>) throws {
        let known = Set(ConfigSchema.variables).union(also)
        // List keys: every index the file has, and a few more (a repository added by variables).
        let count = max(1, (values.keys.compactMap { k -> Int? in
            let p = k.split(separator: "."); return p.first == "repositories" && p.count > 1 ? Int(p[1]) : nil
        }.max() ?? 0) + 1)
        var names = [String: String]()
        for k in ConfigSchema.keys {
            if k.path.contains("*") {
                for i in 0..<(count + 4) {
                    let p = k.path.split(separator: "*", omittingEmptySubsequences: false).joined(separator: String(i))
                    names[ConfigKey.environmentName(p)] = p
                }
            } else {
                names[ConfigKey.environmentName(k.path)] = k.path
            }
        }
        for (name, text) in environment where name.hasPrefix("WAYBACK_") && !known.contains(name) {
            guard let path = names[name], let key = ConfigSchema.key(path) else {
                throw WaybackError(.config, "environment variable \(name) does not name a configuration key; see docs/configuration.md")
            }
            let v = Value(text: text, origin: "environment variable \(name)")
            try Self.check(v, key: key, name: path)
            values[path] = v
        }
    }

    private mutating func flatten(_ node: Node, prefix: String) throws {
        switch node {
        case .mapping(let m):
            for (k, v) in m {
                guard let name = k.string else { throw WaybackError(.config, "\(file):\(Self.line(k)): keys must be strings") }
                let path = prefix.isEmpty ? name : prefix + "." + name
                if prefix.isEmpty, !ConfigSchema.sections.contains(name), ConfigSchema.key(name) == nil {
                    throw WaybackError(.config, "\(file):\(Self.line(k)): unknown key '\(name)'; see docs/configuration.md for the keys")
                }
                try flatten(v, prefix: path)
            }
        case .sequence(let s):
            guard ConfigSchema.isList(prefix) else {
                throw WaybackError(.config, "\(file):\(Self.line(node)): '\(prefix)' must not be a list")
            }
            for (i, item) in s.enumerated() {
                if case .scalar = item, ConfigSchema.key(prefix + ".\(i)") == nil {
                    throw WaybackError(.config, "\(file):\(Self.line(item)): each entry of '\(prefix)' must be a mapping of keys")
                }
                try flatten(item, prefix: "\(prefix).\(i)")
            }
        case .scalar(let s):
            if ConfigSchema.sections.contains(prefix) && !s.string.isEmpty {
                throw WaybackError(.config, "\(file):\(Self.line(node)): '\(prefix)' must be a \(ConfigSchema.lists.contains(prefix) ? "list" : "mapping"), not a value")
            }
            values[prefix] = Value(text: s.string, origin: "\(file):\(Self.line(node))")
        case .alias:
            throw WaybackError(.config, "\(file):\(Self.line(node)): YAML aliases are not supported")
        }
    }

    static func line(_ node: Node) -> Int { node.mark?.line ?? 0 }

    /// One line saying what is wrong in the YAML and where.
    static func yamlReason(_ error: any Error) -> String {
        if let y = error as? YamlError {
            switch y {
            case .duplicatedKeysInMapping(let duplicates, let context):
                let keys = duplicates.sorted().map { "'\($0)'" }.joined(separator: ", ")
                return "the mapping at line \(context.mark.line) has \(keys) more than once; keep one"
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
                 .composer(let context, let problem, let mark, _):
                return "line \(mark.line), column \(mark.column): \(problem)" + (context.map { " (\($0.text) at line \($0.mark.line))" } ?? "")
            default:
                break
            }
        }
        let s = String(describing: error)
        return s.split(separator: "\n").first.map(String.init) ?? s
    }

    /// The one check of a value against its key's type (and range, and words).
    static func check(_ v: Value, key: ConfigKey, name: String) throws {
        if v.text.isEmpty { return }  // `key:` with nothing: not set
        func fail(_ what: String) -> WaybackError { WaybackError(.config, "\(v.origin): '\(name)' must be \(what), not '\(v.text)'") }
        switch key.kind {
        case .string:
            return
        case .path:
            guard v.text.hasPrefix("/") else { throw WaybackError(.config, "\(v.origin): '\(name)' must be an absolute path, not '\(v.text)'") }
        case .int(let range):
            guard let i = Int(v.text) else { throw fail("a whole number") }
            if let range, !range.contains(i) {
                throw fail(range.upperBound == Int.max ? "at least \(range.lowerBound)" : "from \(range.lowerBound) to \(range.upperBound)")
            }
        case .number(let min):
            guard let d = Double(v.text), d.isFinite else { throw fail("a number") }
            if let min, d < min { throw fail("at least \(ConfigKey.plain(min))") }
        case .bool:
            guard parseBool(v.text) != nil else { throw fail("true or false") }
        case .choice(let words):
            guard words.contains(where: { $0.lowercased() == v.text.lowercased() }) else { throw fail("one of " + words.joined(separator: ", ")) }
        }
    }

    /// YAML's booleans as people write them.
    static func parseBool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: return nil
        }
    }

    // MARK: reading back

    /// Keys read in with a value (not empty).
    var keys: [String] { values.filter { !$0.value.text.isEmpty }.keys.sorted() }

    func has(_ key: String) -> Bool { !(values[key]?.text.isEmpty ?? true) }

    /// Where the value of `key` came from (for messages), or the file.
    func origin(_ key: String) -> String { values[key]?.origin ?? file }

    /// The text given for `key`, else the table's default value, else nil.
    func string(_ key: String) -> String? {
        if let v = values[key], !v.text.isEmpty { return v.text }
        if case .value(let d)? = ConfigSchema.key(key)?.defaultValue { return d == "\"\"" ? "" : d }
        return nil
    }

    func required(_ key: String) throws -> String {
        guard let v = string(key) else {
            throw WaybackError(.config, "\(file): required key '\(key)' is missing (or set \(ConfigKey.environmentName(key)))")
        }
        return v
    }

    /// Whole numbers, numbers and booleans were checked when read in; these read them back (nil
    /// when neither given nor defaulted).
    func int(_ key: String) -> Int? { string(key).flatMap { Int($0) } }
    func number(_ key: String) -> Double? { string(key).flatMap { Double($0) } }
    func bool(_ key: String) -> Bool? { string(key).flatMap(Self.parseBool) }

    /// A key that has a default in the table, read with `read` (`ConfigValues.int`, `.number`,
    /// `.bool`, `.string`). `.internal` naming the key if the table lost its default (never a crash).
    func defaulted<T>(_ key: String, _ read: (ConfigValues) -> (String) -> T?) throws -> T {
        guard let v = read(self)(key) else {
            throw WaybackError(.internal, "configuration key '\(key)' has no default in ConfigSchema")
        }
        return v
    }

    /// A `choice` key with a default in the table, as its enum.
    func defaulted<E: RawRepresentable & CaseIterable>(_ key: String, as type: E.Type) throws -> E where E.RawValue == String {
        guard let v = choice(key, as: type) else {
            throw WaybackError(.internal, "configuration key '\(key)' has no default in ConfigSchema")
        }
        return v
    }

    /// A `choice` key as its enum (matched in any case).
    func choice<E: RawRepresentable & CaseIterable>(_ key: String, as: E.Type) -> E? where E.RawValue == String {
        guard let text = string(key) else { return nil }
        return E.allCases.first { $0.rawValue.lowercased() == text.lowercased() }
    }

    /// The keys given a value whose key is a secret, and a password inside `cluster.connection`.
    func secretKeys(connectionsWithPassword: [String]) -> [String] {
        var out = connectionsWithPassword.map { "the password in \($0)" }
        out += keys.filter { k in values[k].map { !$0.origin.hasPrefix("environment") } ?? false && ConfigSchema.key(k)?.secret == true }
        return out
    }
}
