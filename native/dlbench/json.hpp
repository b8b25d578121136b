// A small JSON reader and writer: enough for dlbench's config file and stdin commands (objects, arrays,
// strings with escapes, numbers, booleans, null). dlbench has no third-party dependencies besides the engine
// libraries it links, so that one static binary runs on a phone.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace dl {

struct JsonError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Json {
public:
    enum class Kind { Null, Bool, Number, String, Array, Object };

    Json() = default;
    static Json number(double v) {
        Json j;
        j.kind_ = Kind::Number;
        j.num_ = v;
        return j;
    }

    Kind kind() const { return kind_; }
    bool is_null() const { return kind_ == Kind::Null; }
    bool is_number() const { return kind_ == Kind::Number; }
    bool is_string() const { return kind_ == Kind::String; }
    bool is_array() const { return kind_ == Kind::Array; }
    bool is_object() const { return kind_ == Kind::Object; }
    bool is_bool() const { return kind_ == Kind::Bool; }

    double as_number() const { return num_; }
    bool as_bool() const { return bool_; }
    const std::string& as_string() const { return str_; }
    const std::vector<Json>& items() const { return arr_; }
    const std::map<std::string, Json>& fields() const { return obj_; }

    // Object lookup; a missing key (or a non-object) yields a shared null value.
    const Json& operator[](const std::string& key) const {
        static const Json null;
        if (kind_ != Kind::Object) return null;
        auto it = obj_.find(key);
        return it == obj_.end() ? null : it->second;
    }
    bool has(const std::string& key) const { return kind_ == Kind::Object && obj_.count(key) != 0; }

    static Json parse(const std::string& text) {
        size_t pos = 0;
        Json j = parse_value(text, pos, 0);
        skip_ws(text, pos);
        if (pos != text.size()) throw JsonError("trailing characters at offset " + std::to_string(pos));
        return j;
    }

private:
    Kind kind_ = Kind::Null;
    bool bool_ = false;
    double num_ = 0;
    std::string str_;
    std::vector<Json> arr_;
    std::map<std::string, Json> obj_;

    static void skip_ws(const std::string& s, size_t& p) {
        while (p < s.size() && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r')) p++;
    }

    static void expect(const std::string& s, size_t& p, const char* word) {
        for (const char* w = word; *w; w++, p++)
            if (p >= s.size() || s[p] != *w) throw JsonError(std::string("expected '") + word + "'");
    }

    static void put_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    static uint32_t hex4(const std::string& s, size_t& p) {
        if (p + 4 > s.size()) throw JsonError("truncated \\u escape");
        uint32_t v = 0;
        for (int i = 0; i < 4; i++) {
            char c = s[p++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= c - '0';
            else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
            else throw JsonError("bad \\u escape");
        }
        return v;
    }

    static std::string parse_string(const std::string& s, size_t& p) {
        std::string out;
        p++;  // opening quote
        while (true) {
            if (p >= s.size()) throw JsonError("unterminated string");
            char c = s[p++];
            if (c == '"') return out;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (p >= s.size()) throw JsonError("unterminated escape");
            char e = s[p++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = hex4(s, p);
                    if (cp >= 0xD800 && cp < 0xDC00 && p + 6 <= s.size() && s[p] == '\\' && s[p + 1] == 'u') {
                        p += 2;
                        uint32_t lo = hex4(s, p);
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    put_utf8(out, cp);
                    break;
                }
                default: throw JsonError("bad escape");
            }
        }
    }

    static Json parse_value(const std::string& s, size_t& p, int depth) {
        if (depth > 64) throw JsonError("nesting too deep");
        skip_ws(s, p);
        if (p >= s.size()) throw JsonError("unexpected end of input");
        Json j;
        char c = s[p];
        if (c == '{') {
            j.kind_ = Kind::Object;
            p++;
            skip_ws(s, p);
            if (p < s.size() && s[p] == '}') {
                p++;
                return j;
            }
            while (true) {
                skip_ws(s, p);
                if (p >= s.size() || s[p] != '"') throw JsonError("expected a key string");
                std::string key = parse_string(s, p);
                skip_ws(s, p);
                if (p >= s.size() || s[p] != ':') throw JsonError("expected ':'");
                p++;
                j.obj_[key] = parse_value(s, p, depth + 1);
                skip_ws(s, p);
                if (p < s.size() && s[p] == ',') {
                    p++;
                    continue;
                }
                if (p < s.size() && s[p] == '}') {
                    p++;
                    return j;
                }
                throw JsonError("expected ',' or '}'");
            }
        }
        if (c == '[') {
            j.kind_ = Kind::Array;
            p++;
            skip_ws(s, p);
            if (p < s.size() && s[p] == ']') {
                p++;
                return j;
            }
            while (true) {
                j.arr_.push_back(parse_value(s, p, depth + 1));
                skip_ws(s, p);
                if (p < s.size() && s[p] == ',') {
                    p++;
                    continue;
                }
                if (p < s.size() && s[p] == ']') {
                    p++;
                    return j;
                }
                throw JsonError("expected ',' or ']'");
            }
        }
        if (c == '"') {
            j.kind_ = Kind::String;
            j.str_ = parse_string(s, p);
            return j;
        }
        if (c == 't') {
            expect(s, p, "true");
            j.kind_ = Kind::Bool;
            j.bool_ = true;
            return j;
        }
        if (c == 'f') {
            expect(s, p, "false");
            j.kind_ = Kind::Bool;
            return j;
        }
        if (c == 'n') {
            expect(s, p, "null");
            return j;
        }
        const char* start = s.c_str() + p;
        char* end = nullptr;
        double v = std::strtod(start, &end);
        if (end == start) throw JsonError("unexpected character at offset " + std::to_string(p));
        p += static_cast<size_t>(end - start);
        j.kind_ = Kind::Number;
        j.num_ = v;
        return j;
    }
};

// ---- writing: events are flat, so a tiny builder is enough ------------------------------------------------

inline std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + "\"";
}

inline std::string json_number(double v) {
    char buf[32];
    // 17 significant digits round-trip any double; seconds from a nanosecond clock need far fewer.
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

class JsonObject {
public:
    JsonObject& add(const std::string& key, const std::string& v) { return raw(key, json_quote(v)); }
    JsonObject& add(const std::string& key, const char* v) { return raw(key, json_quote(v)); }
    JsonObject& add(const std::string& key, double v) { return raw(key, json_number(v)); }
    JsonObject& add(const std::string& key, int v) { return raw(key, std::to_string(v)); }
    JsonObject& add(const std::string& key, long long v) { return raw(key, std::to_string(v)); }
    JsonObject& add(const std::string& key, bool v) { return raw(key, v ? "true" : "false"); }
    JsonObject& raw(const std::string& key, const std::string& json) {
        body_ += (body_.empty() ? "" : ",") + json_quote(key) + ":" + json;
        return *this;
    }
    std::string str() const { return "{" + body_ + "}"; }

private:
    std::string body_;
};

}  // namespace dl
