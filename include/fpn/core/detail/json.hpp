// A small, strict JSON reader for safetensors headers. Public headers may depend only on Eigen and
// the standard library, so fpn cannot use nlohmann/json here. It bounds nesting depth so hostile
// input cannot exhaust the stack, and reports the byte offset of every syntax error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"

namespace fpn::detail {

struct JsonValue {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  std::string text;  // a string's decoded value, or a number's literal text
  std::vector<JsonValue> items;
  std::vector<std::pair<std::string, JsonValue>> members;  // in file order

  const JsonValue* find(std::string_view key) const {
    for (const auto& [name, value] : members) {
      if (name == key) return &value;
    }
    return nullptr;
  }
};

class JsonParser {
 public:
  static constexpr int max_depth = 64;

  // Throws Error("<context>: header is not valid JSON: <reason> at byte N").
  static JsonValue parse(std::string_view text, std::string_view context) {
    JsonParser parser(text, context);
    parser.skip_space();
    JsonValue value = parser.parse_value(0);
    parser.skip_space();
    if (parser.position_ != text.size()) parser.fail("unexpected trailing characters");
    return value;
  }

 private:
  JsonParser(std::string_view text, std::string_view context) : text_(text), context_(context) {}

  [[noreturn]] void fail(std::string_view reason) const { fail_at(position_, reason); }
  [[noreturn]] void fail_at(std::size_t byte, std::string_view reason) const {
    throw WeightError(std::string(context_) + ": header is not valid JSON: " + std::string(reason) +
                      " at byte " + std::to_string(byte));
  }

  bool at_end() const { return position_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[position_]; }
  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++position_;
    }
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++position_;
  }
  void expect_word(std::string_view word) {
    if (text_.substr(position_, word.size()) != word) fail("invalid literal");
    position_ += word.size();
  }

  JsonValue parse_value(int depth) {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    if (at_end()) fail("unexpected end of header");
    JsonValue value;
    switch (peek()) {
      case '{':
        value.kind = JsonValue::Kind::object;
        parse_object(value, depth);
        break;
      case '[':
        value.kind = JsonValue::Kind::array;
        parse_array(value, depth);
        break;
      case '"':
        value.kind = JsonValue::Kind::string;
        value.text = parse_string();
        break;
      case 't':
        expect_word("true");
        value.kind = JsonValue::Kind::boolean;
        value.boolean = true;
        break;
      case 'f':
        expect_word("false");
        value.kind = JsonValue::Kind::boolean;
        break;
      case 'n':
        expect_word("null");
        break;
      default:
        value.kind = JsonValue::Kind::number;
        value.text = parse_number();
    }
    return value;
  }

  void parse_object(JsonValue& object, int depth) {
    expect('{');
    skip_space();
    if (peek() == '}') {
      ++position_;
      return;
    }
    while (true) {
      skip_space();
      if (peek() != '"') fail("expected a string key");
      std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      object.members.emplace_back(std::move(key), parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++position_;
        continue;
      }
      expect('}');
      return;
    }
  }

  void parse_array(JsonValue& array, int depth) {
    expect('[');
    skip_space();
    if (peek() == ']') {
      ++position_;
      return;
    }
    while (true) {
      skip_space();
      array.items.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++position_;
        continue;
      }
      expect(']');
      return;
    }
  }

  std::string parse_number() {
    const std::size_t start = position_;
    if (peek() == '-') ++position_;
    if (!is_digit(peek())) fail("invalid value");
    if (peek() == '0') {
      ++position_;
    } else {
      while (is_digit(peek())) ++position_;
    }
    if (peek() == '.') {
      ++position_;
      if (!is_digit(peek())) fail("invalid number");
      while (is_digit(peek())) ++position_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++position_;
      if (peek() == '+' || peek() == '-') ++position_;
      if (!is_digit(peek())) fail("invalid number");
      while (is_digit(peek())) ++position_;
    }
    return std::string(text_.substr(start, position_ - start));
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  unsigned parse_hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = peek();
      unsigned digit = 0;
      if (c >= '0' && c <= '9') {
        digit = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail("invalid \\u escape");
      }
      code = code * 16 + digit;
      ++position_;
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (at_end()) fail("unterminated string");
      const std::size_t start = position_;  // errors point at the offending character or escape
      const char c = text_[position_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail_at(start, "control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) fail("unterminated escape");
      const char escape = text_[position_++];
      switch (escape) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = parse_hex4();
          if (code >= 0xD800 && code < 0xDC00) {  // a surrogate pair encodes one code point
            if (text_.substr(position_, 2) != "\\u") fail_at(start, "unpaired surrogate");
            position_ += 2;
            const unsigned low = parse_hex4();
            if (low < 0xDC00 || low >= 0xE000) fail_at(start, "unpaired surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code < 0xE000) {
            fail_at(start, "unpaired surrogate");
          }
          append_utf8(out, code);
          break;
        }
        default:
          fail_at(start, "invalid escape");
      }
    }
  }

  std::string_view text_;
  std::string_view context_;
  std::size_t position_ = 0;
};

// Appends s as a JSON string literal.
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20) {
      out += "\\u00";
      out += hex[byte >> 4];
      out += hex[byte & 0xF];
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace fpn::detail
