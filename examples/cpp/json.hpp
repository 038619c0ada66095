// json.hpp: a small strict JSON reader (RFC 8259) for the build.json that `dimexport build` writes beside an engine.
// Header-only, C++17. Numbers are kept as doubles; \u escapes are decoded to UTF-8.
#pragma once

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace json
{

class Error : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

struct Value
{
    enum class Kind
    {
        kNull,
        kBool,
        kNumber,
        kString,
        kArray,
        kObject
    };
    Kind kind{Kind::kNull};
    bool boolean{false};
    double number{0};
    std::string string;
    std::vector<Value> array;
    std::vector<std::pair<std::string, Value>> object; // in file order

    // The member `key` of an object, or nullptr (also when this is not an object).
    Value const* find(std::string_view key) const
    {
        for (auto const& [k, v] : object)
        {
            if (k == key)
            {
                return &v;
            }
        }
        return nullptr;
    }
};

namespace detail
{

class Parser
{
public:
    explicit Parser(std::string_view text)
        : mText(text)
    {
    }

    Value document()
    {
        Value v = value(0);
        skipSpace();
        if (mPos != mText.size())
        {
            fail("unexpected text after the JSON value");
        }
        return v;
    }

private:
    static constexpr int kMaxDepth = 128;

    [[noreturn]] void fail(std::string const& what) const
    {
        std::size_t line = 1, column = 1;
        for (std::size_t i = 0; i < mPos && i < mText.size(); ++i)
        {
            column = mText[i] == '\n' ? 1 : column + 1;
            line += mText[i] == '\n';
        }
        throw Error("line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + what);
    }

    void skipSpace()
    {
        while (mPos < mText.size()
            && (mText[mPos] == ' ' || mText[mPos] == '\t' || mText[mPos] == '\n' || mText[mPos] == '\r'))
        {
            ++mPos;
        }
    }

    bool literal(std::string_view word)
    {
        if (mText.substr(mPos, word.size()) == word)
        {
            mPos += word.size();
            return true;
        }
        return false;
    }

    Value value(int depth)
    {
        if (depth > kMaxDepth)
        {
            fail("nested deeper than " + std::to_string(kMaxDepth) + " levels");
        }
        skipSpace();
        Value v;
        if (mPos >= mText.size())
        {
            fail("unexpected end of input");
        }
        char const c = mText[mPos];
        if (c == '{')
        {
            v.kind = Value::Kind::kObject;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == '}')
            {
                ++mPos;
                return v;
            }
            do
            {
                skipSpace();
                if (mPos >= mText.size() || mText[mPos] != '"')
                {
                    fail("expected a string key");
                }
                std::string key = string();
                skipSpace();
                expect(':');
                v.object.emplace_back(std::move(key), value(depth + 1));
                skipSpace();
            } while (accept(','));
            expect('}');
        }
        else if (c == '[')
        {
            v.kind = Value::Kind::kArray;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == ']')
            {
                ++mPos;
                return v;
            }
            do
            {
                v.array.push_back(value(depth + 1));
                skipSpace();
            } while (accept(','));
            expect(']');
        }
        else if (c == '"')
        {
            v.kind = Value::Kind::kString;
            v.string = string();
        }
        else if (literal("true") || literal("false"))
        {
            v.kind = Value::Kind::kBool;
            v.boolean = c == 't';
        }
        else if (literal("null"))
        {
            v.kind = Value::Kind::kNull;
        }
        else
        {
            v.kind = Value::Kind::kNumber;
            v.number = number();
        }
        return v;
    }

    bool accept(char c)
    {
        if (mPos < mText.size() && mText[mPos] == c)
        {
            ++mPos;
            return true;
        }
        return false;
    }

    void expect(char c)
    {
        if (!accept(c))
        {
            fail(std::string("expected '") + c + "'");
        }
    }

    bool digits()
    {
        std::size_t const start = mPos;
        while (mPos < mText.size() && mText[mPos] >= '0' && mText[mPos] <= '9')
        {
            ++mPos;
        }
        return mPos > start;
    }

    double number()
    {
        std::size_t const start = mPos;
        accept('-');
        if (!accept('0') && !digits())
        {
            mPos = start;
            fail("expected a value");
        }
        if (accept('.') && !digits())
        {
            fail("expected digits after '.'");
        }
        if (accept('e') || accept('E'))
        {
            if (!accept('+'))
            {
                accept('-');
            }
            if (!digits())
            {
                fail("expected digits in the exponent");
            }
        }
        return std::strtod(std::string(mText.substr(start, mPos - start)).c_str(), nullptr);
    }

    unsigned hex4()
    {
        if (mPos + 4 > mText.size())
        {
            fail("truncated \\u escape");
        }
        unsigned v = 0;
        for (int i = 0; i < 4; ++i)
        {
            char const h = mText[mPos++];
            int const d = h >= '0' && h <= '9' ? h - '0'
                : h >= 'a' && h <= 'f'         ? h - 'a' + 10
                : h >= 'A' && h <= 'F'         ? h - 'A' + 10
                                               : -1;
            if (d < 0)
            {
                fail("bad hex digit in a \\u escape");
            }
            v = v * 16 + static_cast<unsigned>(d);
        }
        return v;
    }

    static void appendUtf8(std::string& s, unsigned cp)
    {
        auto byte = [&s](unsigned b) { s += static_cast<char>(b); };
        if (cp < 0x80)
        {
            byte(cp);
        }
        else if (cp < 0x800)
        {
            byte(0xC0 | (cp >> 6));
            byte(0x80 | (cp & 0x3F));
        }
        else if (cp < 0x10000)
        {
            byte(0xE0 | (cp >> 12));
            byte(0x80 | ((cp >> 6) & 0x3F));
            byte(0x80 | (cp & 0x3F));
        }
        else
        {
            byte(0xF0 | (cp >> 18));
            byte(0x80 | ((cp >> 12) & 0x3F));
            byte(0x80 | ((cp >> 6) & 0x3F));
            byte(0x80 | (cp & 0x3F));
        }
    }

    std::string string()
    {
        ++mPos; // the opening quote
        std::string s;
        while (true)
        {
            if (mPos >= mText.size())
            {
                fail("unterminated string");
            }
            char const c = mText[mPos++];
            if (c == '"')
            {
                return s;
            }
            if (static_cast<unsigned char>(c) < 0x20)
            {
                fail("control character in a string");
            }
            if (c != '\\')
            {
                s += c;
                continue;
            }
            char const e = mPos < mText.size() ? mText[mPos++] : '\0';
            switch (e)
            {
            case '"':
            case '\\':
            case '/': s += e; break;
            case 'b': s += '\b'; break;
            case 'f': s += '\f'; break;
            case 'n': s += '\n'; break;
            case 'r': s += '\r'; break;
            case 't': s += '\t'; break;
            case 'u':
            {
                unsigned cp = hex4();
                if (cp >= 0xD800 && cp < 0xDC00) // high surrogate: a low one must follow
                {
                    if (!literal("\\u"))
                    {
                        fail("unpaired surrogate in a \\u escape");
                    }
                    unsigned const low = hex4();
                    if (low < 0xDC00 || low >= 0xE000)
                    {
                        fail("unpaired surrogate in a \\u escape");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                else if (cp >= 0xDC00 && cp < 0xE000)
                {
                    fail("unpaired surrogate in a \\u escape");
                }
                appendUtf8(s, cp);
                break;
            }
            default: fail("bad escape sequence");
            }
        }
    }

    std::string_view mText;
    std::size_t mPos{0};
};

} // namespace detail

// Parses a whole JSON document; throws json::Error("line L, column C: ...").
inline Value parse(std::string_view text)
{
    return detail::Parser(text).document();
}

} // namespace json
