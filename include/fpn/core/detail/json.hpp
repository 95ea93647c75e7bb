// A small, strict, pull-style JSON reader for safetensors headers. Public headers may depend only
// on Eigen and the standard library, so fpn cannot use nlohmann/json here. It bounds nesting depth
// so hostile input cannot exhaust the stack, and reports the byte offset of every syntax error.
//
// It builds no document tree: the caller reads values in file order and keeps only what it needs.
// A tree costs about 100 bytes per value, and "0," is a value in two bytes, so a 20 MB header
// took 1.5 GB to refuse; reading in place costs nothing beyond the strings the caller keeps.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fpn/core/errors.hpp"

namespace fpn::detail {

class JsonReader {
 public:
  enum class Kind { null, boolean, number, string, array, object };
  static constexpr int max_depth = 64;

  // Checks that `text` is one JSON value nested at most max_depth deep, keeping nothing. Throws
  // WeightError("<context>: header is not valid JSON: <reason> at byte N").
  static void validate(std::string_view text, std::string_view context) {
    JsonReader reader(text, context);
    reader.skip_value();
    reader.finish();
  }

  // Reads `text` from its start; `context` begins every error message. Reading a valid text (see
  // validate) in the wrong order also throws, as the syntax error it would be.
  JsonReader(std::string_view text, std::string_view context) : text_(text), context_(context) {}

  // The kind of the next value, without consuming it.
  Kind peek() {
    skip_space();
    if (at_end()) fail("unexpected end of header");
    switch (text_[position_]) {
      case '{': return Kind::object;
      case '[': return Kind::array;
      case '"': return Kind::string;
      case 't':
      case 'f': return Kind::boolean;
      case 'n': return Kind::null;
      default: return Kind::number;
    }
  }

  // An object is read as begin_object(); while (next_member(key)) { read or skip the value }.
  void begin_object() { begin('{'); }
  bool next_member(std::string& key) {
    if (!next('}')) return false;
    if (peek_char() != '"') fail("expected a string key");
    key.clear();
    parse_string(&key);
    skip_space();
    expect(':');
    return true;
  }

  // An array is read as begin_array(); while (next_item()) { read or skip the item }.
  void begin_array() { begin('['); }
  bool next_item() { return next(']'); }

  std::string read_string() {
    if (peek() != Kind::string) fail("expected a string");
    std::string out;
    parse_string(&out);
    return out;
  }
  // A number's literal text, e.g. "-1.5e3".
  std::string read_number() {
    if (peek() != Kind::number) fail("expected a number");
    return std::string(parse_number());
  }
  bool read_boolean() {
    if (peek() != Kind::boolean) fail("expected a boolean");
    const bool value = text_[position_] == 't';
    expect_word(value ? "true" : "false");
    return value;
  }
  void read_null() {
    if (peek() != Kind::null) fail("expected null");
    expect_word("null");
  }

  // Consumes the next value, whatever it is, checking its syntax and keeping nothing.
  void skip_value() { skip_value_at(depth_); }

  // After the top-level value: only whitespace may follow.
  void finish() {
    skip_space();
    if (!at_end()) fail("unexpected trailing characters");
  }

 private:
  [[noreturn]] void fail(std::string_view reason) const { fail_at(position_, reason); }
  [[noreturn]] void fail_at(std::size_t byte, std::string_view reason) const {
    throw WeightError(std::string(context_) + ": header is not valid JSON: " + std::string(reason) +
                      " at byte " + std::to_string(byte));
  }

  bool at_end() const { return position_ >= text_.size(); }
  char peek_char() const { return at_end() ? '\0' : text_[position_]; }
  void skip_space() {
    while (!at_end() && (peek_char() == ' ' || peek_char() == '\t' || peek_char() == '\n' ||
                         peek_char() == '\r')) {
      ++position_;
    }
  }
  void expect(char c) {
    if (peek_char() != c) fail(std::string("expected '") + c + "'");
    ++position_;
  }
  void expect_word(std::string_view word) {
    if (text_.substr(position_, word.size()) != word) fail("invalid literal");
    position_ += word.size();
  }

  // Containers: `first_` says whether the container just opened has had no entry yet. A single flag
  // suffices because the caller reads each entry completely before asking for the next one.
  void begin(char open) {
    skip_space();
    if (depth_ > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    expect(open);
    ++depth_;
    first_ = true;
  }
  // Moves to the next entry of the innermost open container, or past its `close` if none is left.
  bool next(char close) {
    skip_space();
    const bool first = first_;
    first_ = false;
    if (!first && peek_char() == ',') {
      ++position_;
      skip_space();
      return true;
    }
    if (first && peek_char() != close) return true;
    expect(close);
    --depth_;
    return false;
  }

  void skip_value_at(int depth) {
    skip_space();
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    if (at_end()) fail("unexpected end of header");
    switch (peek_char()) {
      case '{':
        skip_container(depth, '}', true);
        break;
      case '[':
        skip_container(depth, ']', false);
        break;
      case '"':
        parse_string(nullptr);
        break;
      case 't':
        expect_word("true");
        break;
      case 'f':
        expect_word("false");
        break;
      case 'n':
        expect_word("null");
        break;
      default:
        parse_number();
    }
  }

  void skip_container(int depth, char close, bool is_object) {
    ++position_;
    skip_space();
    if (peek_char() == close) {
      ++position_;
      return;
    }
    while (true) {
      skip_space();
      if (is_object) {
        if (peek_char() != '"') fail("expected a string key");
        parse_string(nullptr);
        skip_space();
        expect(':');
      }
      skip_value_at(depth + 1);
      skip_space();
      if (peek_char() == ',') {
        ++position_;
        continue;
      }
      expect(close);
      return;
    }
  }

  std::string_view parse_number() {
    const std::size_t start = position_;
    if (peek_char() == '-') ++position_;
    if (!is_digit(peek_char())) fail("invalid value");
    if (peek_char() == '0') {
      ++position_;
    } else {
      while (is_digit(peek_char())) ++position_;
    }
    if (peek_char() == '.') {
      ++position_;
      if (!is_digit(peek_char())) fail("invalid number");
      while (is_digit(peek_char())) ++position_;
    }
    if (peek_char() == 'e' || peek_char() == 'E') {
      ++position_;
      if (peek_char() == '+' || peek_char() == '-') ++position_;
      if (!is_digit(peek_char())) fail("invalid number");
      while (is_digit(peek_char())) ++position_;
    }
    return text_.substr(start, position_ - start);
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  unsigned parse_hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = peek_char();
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

  // Decodes the string literal at the current position into *out, or only checks it if out is null.
  void parse_string(std::string* out) {
    expect('"');
    while (true) {
      if (at_end()) fail("unterminated string");
      const std::size_t start = position_;  // errors point at the offending character or escape
      const char c = text_[position_++];
      if (c == '"') return;
      if (static_cast<unsigned char>(c) < 0x20) fail_at(start, "control character in string");
      if (c != '\\') {
        if (out != nullptr) *out += c;
        continue;
      }
      if (at_end()) fail("unterminated escape");
      const char escape = text_[position_++];
      char decoded = '\0';
      switch (escape) {
        case '"': decoded = '"'; break;
        case '\\': decoded = '\\'; break;
        case '/': decoded = '/'; break;
        case 'b': decoded = '\b'; break;
        case 'f': decoded = '\f'; break;
        case 'n': decoded = '\n'; break;
        case 'r': decoded = '\r'; break;
        case 't': decoded = '\t'; break;
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
          if (out != nullptr) append_utf8(*out, code);
          continue;
        }
        default:
          fail_at(start, "invalid escape");
      }
      if (out != nullptr) *out += decoded;
    }
  }

  std::string_view text_;
  std::string_view context_;
  std::size_t position_ = 0;
  int depth_ = 0;  // containers opened by begin_object/begin_array and not yet closed
  bool first_ = false;
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
