// npy.hpp: read and write NumPy .npy files (format versions 1.0, 2.0 and 3.0) holding little-endian, C-order
// arrays of plain numeric types. Header-only, C++17, no dependencies.
//
//   npy::Array a = npy::read("x.npy");          // throws npy::Error naming the file and the problem
//   npy::write("out.npy", a);                    // format 1.0, the header padded to 64 bytes like numpy's
//
// Supported descr: '|b1', '|i1', '|u1', '<i2', '<u2', '<f2', '<i4', '<u4', '<f4', '<i8', '<u8', '<f8' (the byte
// order may also be spelled '=' or '|'). Rejected with a message saying how to re-save the array: big-endian
// data, fortran_order True, structured/string/object/complex dtypes.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy.hpp copies raw bytes: little-endian hosts only");

namespace npy
{

class Error : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

// numpy 2's limit on the number of dimensions; it also bounds the header of a written file to well under the
// 65535 bytes that format 1.0 can describe.
constexpr std::size_t kMaxRank = 64;

struct Array
{
    std::string descr;                // canonical: '|' for one-byte types, '<' otherwise, e.g. "<f4", "|b1"
    std::vector<std::int64_t> shape;  // empty for a 0-d array (one element)
    std::vector<unsigned char> data;  // elements in C order, little-endian
};

// Bytes per element of a canonical descr (see canonicalDescr); 0 if unsupported.
inline std::size_t itemSize(std::string const& descr)
{
    static char const* const kTypes[] = {"|b1", "|i1", "|u1", "<i2", "<u2", "<f2", "<i4", "<u4", "<f4", "<i8",
        "<u8", "<f8"};
    for (char const* t : kTypes)
    {
        if (descr == t)
        {
            return static_cast<std::size_t>(t[2] - '0');
        }
    }
    return 0;
}

// NumPy's name for a descr ("<f4" -> "float32"), for messages.
inline std::string typeName(std::string const& descr)
{
    std::size_t const size = itemSize(descr);
    if (size == 0)
    {
        return "'" + descr + "'";
    }
    switch (descr[1])
    {
    case 'b': return "bool";
    case 'f': return "float" + std::to_string(size * 8);
    case 'i': return "int" + std::to_string(size * 8);
    default: return "uint" + std::to_string(size * 8);
    }
}

// Number of elements; throws if a dimension is negative or the byte size would not fit in size_t.
inline std::size_t elementCount(std::vector<std::int64_t> const& shape, std::size_t itemBytes = 1)
{
    std::size_t count = 1;
    for (std::int64_t d : shape)
    {
        if (d < 0)
        {
            throw Error("negative dimension " + std::to_string(d));
        }
        std::size_t const u = static_cast<std::size_t>(d);
        if (u != 0 && count > std::numeric_limits<std::size_t>::max() / itemBytes / u)
        {
            throw Error("array too large");
        }
        count *= u;
    }
    return count;
}

inline std::string shapeString(std::vector<std::int64_t> const& shape)
{
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        s += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return s + (shape.size() == 1 ? ",)" : ")");
}

namespace detail
{

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;
constexpr std::size_t kAlign = 64;
constexpr std::size_t kMaxHeader = 1 << 20; // numpy itself refuses headers over 10000 bytes by default

// Maps a descr from a file to its canonical spelling; throws for what this reader does not handle.
inline std::string canonicalDescr(std::string const& descr)
{
    if (descr.size() == 3 && descr[0] == '>')
    {
        if (descr[2] == '1')
        {
            return canonicalDescr("|" + descr.substr(1)); // byte order is meaningless for one-byte types
        }
        throw Error("dtype '" + descr + "' is big-endian; re-save it little-endian: np.save(path, a.astype('<"
            + descr.substr(1) + "'))");
    }
    if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '|' || descr[0] == '='))
    {
        std::string const canon = (descr[2] == '1' ? "|" : "<") + descr.substr(1);
        if (itemSize(canon) != 0)
        {
            return canon;
        }
    }
    throw Error("unsupported dtype '" + descr + "' (supported: bool, int8/16/32/64, uint8/16/32/64, "
        "float16/32/64)");
}

// Parser for the header, a Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser
{
public:
    explicit HeaderParser(std::string text)
        : mText(std::move(text))
    {
    }

    void parse(Array& out)
    {
        bool haveDescr = false, haveOrder = false, haveShape = false;
        expect('{');
        while (!consume('}'))
        {
            std::string const key = parseString();
            expect(':');
            if (key == "descr")
            {
                duplicate(haveDescr, key);
                skipSpace();
                if (peek() == '[')
                {
                    throw Error("structured dtypes are not supported (descr is a list of fields)");
                }
                out.descr = canonicalDescr(parseString());
            }
            else if (key == "fortran_order")
            {
                duplicate(haveOrder, key);
                if (parseBool())
                {
                    throw Error("fortran_order is True (column-major data); only C-order arrays are read: re-save "
                                "with np.save(path, np.ascontiguousarray(a))");
                }
            }
            else if (key == "shape")
            {
                duplicate(haveShape, key);
                out.shape = parseShape();
            }
            else
            {
                throw Error("unexpected key '" + key + "' in the header");
            }
            if (!consume(','))
            {
                expect('}');
                break;
            }
        }
        skipSpace();
        if (mPos != mText.size())
        {
            fail("nothing after the closing '}'");
        }
        for (auto const& [have, key] : {std::pair{haveDescr, "descr"}, {haveOrder, "fortran_order"},
                 {haveShape, "shape"}})
        {
            if (!have)
            {
                throw Error(std::string("the header lacks '") + key + "'");
            }
        }
    }

private:
    [[noreturn]] void fail(std::string const& what) const
    {
        throw Error("malformed header at offset " + std::to_string(mPos) + " (" + what + "): " + mText);
    }

    void skipSpace()
    {
        while (mPos < mText.size() && (mText[mPos] == ' ' || mText[mPos] == '\t' || mText[mPos] == '\n'
                                          || mText[mPos] == '\r'))
        {
            ++mPos;
        }
    }

    char peek() const { return mPos < mText.size() ? mText[mPos] : '\0'; }

    bool consume(char c)
    {
        skipSpace();
        if (peek() == c)
        {
            ++mPos;
            return true;
        }
        return false;
    }

    void expect(char c)
    {
        if (!consume(c))
        {
            fail(std::string("expected '") + c + "'");
        }
    }

    static void duplicate(bool& seen, std::string const& key)
    {
        if (seen)
        {
            throw Error("the header repeats '" + key + "'");
        }
        seen = true;
    }

    // A quoted string without escapes: the keys and type strings of a numeric dtype never need them.
    std::string parseString()
    {
        skipSpace();
        char const quote = peek();
        if (quote != '\'' && quote != '"')
        {
            fail("expected a quoted string");
        }
        std::size_t const end = mText.find(quote, mPos + 1);
        if (end == std::string::npos)
        {
            fail("unterminated string");
        }
        std::string s = mText.substr(mPos + 1, end - mPos - 1);
        if (s.find('\\') != std::string::npos)
        {
            fail("escape sequences are not supported");
        }
        mPos = end + 1;
        return s;
    }

    bool parseBool()
    {
        skipSpace();
        for (auto const& [word, value] : {std::pair{"True", true}, {"False", false}})
        {
            std::size_t const n = std::strlen(word);
            if (mText.compare(mPos, n, word) == 0)
            {
                mPos += n;
                return value;
            }
        }
        fail("expected True or False");
    }

    std::vector<std::int64_t> parseShape()
    {
        std::vector<std::int64_t> shape;
        expect('(');
        while (!consume(')'))
        {
            skipSpace();
            std::size_t const start = mPos;
            std::int64_t value = 0;
            while (mPos < mText.size() && mText[mPos] >= '0' && mText[mPos] <= '9')
            {
                std::int64_t const digit = mText[mPos++] - '0';
                if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10)
                {
                    fail("dimension too large");
                }
                value = value * 10 + digit;
            }
            if (mPos == start)
            {
                fail("expected a non-negative integer dimension");
            }
            if (peek() == 'L') // Python 2 long literal, found in old files
            {
                ++mPos;
            }
            shape.push_back(value);
            if (shape.size() > kMaxRank)
            {
                fail("more than " + std::to_string(kMaxRank) + " dimensions");
            }
            if (!consume(','))
            {
                expect(')');
                break;
            }
        }
        return shape;
    }

    std::string mText;
    std::size_t mPos{0};
};

inline std::uint32_t readLittleEndian(unsigned char const* p, std::size_t n)
{
    std::uint32_t v = 0;
    for (std::size_t i = n; i-- > 0;)
    {
        v = (v << 8) | p[i];
    }
    return v;
}

} // namespace detail

// Reads an .npy stream (seekable: a file or a string stream); `source` names it in error messages.
inline Array read(std::istream& in, std::string const& source)
{
    auto error = [&source](std::string const& what) { return Error(source + ": " + what); };
    unsigned char prefix[detail::kMagicSize + 2];
    if (!in.read(reinterpret_cast<char*>(prefix), sizeof(prefix))
        || std::memcmp(prefix, detail::kMagic, detail::kMagicSize) != 0)
    {
        throw error("not an .npy file (no \\x93NUMPY magic string at the start)");
    }
    unsigned const major = prefix[detail::kMagicSize], minor = prefix[detail::kMagicSize + 1];
    if (major < 1 || major > 3 || minor != 0)
    {
        throw error("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor)
            + " (1.0, 2.0 and 3.0 are read)");
    }
    std::size_t const lengthBytes = major == 1 ? 2 : 4;
    unsigned char length[4];
    if (!in.read(reinterpret_cast<char*>(length), static_cast<std::streamsize>(lengthBytes)))
    {
        throw error("truncated header");
    }
    std::size_t const headerBytes = detail::readLittleEndian(length, lengthBytes);
    if (headerBytes > detail::kMaxHeader)
    {
        throw error("implausible header length " + std::to_string(headerBytes) + " (more than "
            + std::to_string(detail::kMaxHeader) + " bytes)");
    }
    std::string header(headerBytes, '\0');
    if (!in.read(header.data(), static_cast<std::streamsize>(header.size())))
    {
        throw error("truncated header (it declares " + std::to_string(header.size()) + " bytes)");
    }

    Array array;
    try
    {
        detail::HeaderParser(header).parse(array); // 3.0 headers are UTF-8; the fields read here are ASCII
    }
    catch (Error const& e)
    {
        throw error(e.what());
    }
    std::size_t bytes = 0;
    try
    {
        std::size_t const item = itemSize(array.descr);
        bytes = elementCount(array.shape, item) * item;
    }
    catch (Error const& e)
    {
        throw error(std::string(e.what()) + " in shape " + shapeString(array.shape));
    }
    // Compare with the bytes left before allocating, so a corrupt shape cannot ask for terabytes.
    std::streamoff const start = in.tellg();
    in.seekg(0, std::ios::end);
    std::size_t const left = static_cast<std::size_t>(in.tellg() - start);
    in.seekg(start);
    if (left != bytes)
    {
        throw error(std::string(left < bytes ? "truncated data" : "unexpected bytes after the data") + ": "
            + typeName(array.descr) + " " + shapeString(array.shape) + " needs " + std::to_string(bytes)
            + " bytes, the file has " + std::to_string(left));
    }
    array.data.resize(bytes);
    if (!in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(bytes)))
    {
        throw error("read error in the data");
    }
    return array;
}

inline Array read(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw Error("cannot open '" + path + "': " + std::strerror(errno));
    }
    return read(in, "'" + path + "'");
}

// The bytes of an .npy file in format `major`.0 (1, 2 or 3); numpy reads all three, 1.0 also numpy < 1.9.
inline std::string encode(Array const& array, unsigned major = 1)
{
    if (major < 1 || major > 3)
    {
        throw Error("cannot write .npy format version " + std::to_string(major) + ".0");
    }
    std::size_t const item = itemSize(array.descr);
    if (item == 0)
    {
        throw Error("cannot write dtype '" + array.descr + "' (use a canonical descr such as '<f4' or '|b1')");
    }
    if (array.shape.size() > kMaxRank)
    {
        throw Error("cannot write more than " + std::to_string(kMaxRank) + " dimensions");
    }
    std::size_t const bytes = elementCount(array.shape, item) * item;
    if (array.data.size() != bytes)
    {
        throw Error("data holds " + std::to_string(array.data.size()) + " bytes, but " + typeName(array.descr) + " "
            + shapeString(array.shape) + " needs " + std::to_string(bytes));
    }
    std::string header = "{'descr': '" + array.descr + "', 'fortran_order': False, 'shape': "
        + shapeString(array.shape) + ", }";
    std::size_t const lengthBytes = major == 1 ? 2 : 4;
    std::size_t const fixed = detail::kMagicSize + 2 + lengthBytes;
    // Pad with spaces and end with '\n' so that the data starts 64-byte aligned, as numpy does.
    header.append(detail::kAlign - (fixed + header.size() + 1) % detail::kAlign, ' ');
    header += '\n';
    std::size_t const n = header.size(); // < 65535: at most kMaxRank dimensions of at most 19 digits

    std::string out(detail::kMagic, detail::kMagicSize);
    out += static_cast<char>(major);
    out += '\0';
    for (std::size_t i = 0; i < lengthBytes; ++i)
    {
        out += static_cast<char>((n >> (8 * i)) & 0xFF);
    }
    out += header;
    out.append(reinterpret_cast<char const*>(array.data.data()), array.data.size());
    return out;
}

inline void write(std::string const& path, Array const& array, unsigned major = 1)
{
    std::string bytes;
    try
    {
        bytes = encode(array, major);
    }
    catch (Error const& e)
    {
        throw Error("'" + path + "': " + e.what());
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out || !out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())) || !out.flush())
    {
        throw Error("cannot write '" + path + "': " + std::strerror(errno));
    }
}

} // namespace npy
