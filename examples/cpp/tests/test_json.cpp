// Unit test of json.hpp (ctest example_json).
#include "check.hpp"
#include "json.hpp"

#include <iostream>
#include <string>

namespace
{


void expectError(std::string const& text, std::string const& expected)
{
    try
    {
        json::parse(text);
        check(false, "parsing '" + text + "': no error, expected \"" + expected + "\"");
    }
    catch (json::Error const& e)
    {
        check(e.what() == expected, "parsing '" + text + "':\n  got      \"" + e.what() + "\"\n  expected \"" + expected
                + "\"");
    }
}

} // namespace

int main()
{
    using Kind = json::Value::Kind;
    json::Value const doc = json::parse(R"({
  "tensorrt_version": "10.14.1.48",
  "sm": "sm_90",
  "plugin_sha256": null,
  "io": {"x": {"shape": [-1, 4, 16, 16], "dtype": "fp32"}},
  "numbers": [0, -1.5, 2e3, 1E-2],
  "flags": [true, false],
  "text": "tab\there \"quoted\" \u00e9 \ud83d\ude00 \/"
})");
    check(doc.kind == Kind::kObject && doc.object.size() == 7, "an object with 7 members, in order");
    check(doc.find("tensorrt_version")->string == "10.14.1.48" && doc.find("sm")->string == "sm_90", "strings");
    check(doc.find("plugin_sha256")->kind == Kind::kNull && doc.find("absent") == nullptr, "null and absent keys");
    json::Value const* shape = doc.find("io")->find("x")->find("shape");
    check(shape && shape->array.size() == 4 && shape->array[0].number == -1 && shape->array[3].number == 16,
        "nested objects and arrays");
    json::Value const& numbers = *doc.find("numbers");
    check(numbers.array[1].number == -1.5 && numbers.array[2].number == 2000 && numbers.array[3].number == 0.01,
        "numbers");
    check(doc.find("flags")->array[0].boolean && !doc.find("flags")->array[1].boolean, "booleans");
    check(doc.find("text")->string == "tab\there \"quoted\" \xC3\xA9 \xF0\x9F\x98\x80 /",
        "escapes, \\u and surrogates");
    check(json::parse(" [] ").array.empty() && json::parse("{}").object.empty() && json::parse("0").number == 0,
        "empty containers, bare values");
    check(doc.find("sm")->find("x") == nullptr, "find on a non-object");

    expectError(R"({"a": 1,})", "line 1, column 9: expected a string key");
    expectError("{\n  \"a\": tru\n}", "line 2, column 8: expected a value");
    expectError(R"({"a": "b)", "line 1, column 9: unterminated string");
    expectError(R"(["\x"])", "line 1, column 5: bad escape sequence");
    expectError(R"(["\ud800"])", "line 1, column 9: unpaired surrogate in a \\u escape");
    expectError(R"({"a" 1})", "line 1, column 6: expected ':'");
    expectError("[1, 2", "line 1, column 6: expected ']'");
    expectError("01", "line 1, column 2: unexpected text after the JSON value");
    expectError("1.", "line 1, column 3: expected digits after '.'");
    expectError("{} {}", "line 1, column 4: unexpected text after the JSON value");
    expectError("", "line 1, column 1: unexpected end of input");
    expectError(std::string(200, '['), "line 1, column 130: nested deeper than 128 levels");

    return report();
}
