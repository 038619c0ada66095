// Unit test of npy.hpp (ctest example_npy).
//   test_npy [DIR]   with DIR: also read the np_*.npy files numpy wrote there (tests/npy_numpy.py write DIR) and
//                    write cpp_*.npy files for numpy to check (tests/npy_numpy.py check DIR)
#include "check.hpp"
#include "npy.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace
{


void expectError(std::function<void()> const& f, std::string const& expected, std::string const& what)
{
    try
    {
        f();
        check(false, what + ": no error, expected \"" + expected + "\"");
    }
    catch (npy::Error const& e)
    {
        check(e.what() == expected, what + ":\n  got      \"" + e.what() + "\"\n  expected \"" + expected + "\"");
    }
}

npy::Array decode(std::string const& bytes)
{
    std::istringstream in(bytes);
    return npy::read(in, "src");
}

// An .npy file with the given header text (no padding) and data bytes.
std::string makeFile(std::string const& header, std::string const& data = "", unsigned major = 1)
{
    std::string s = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
    std::size_t const n = header.size();
    for (unsigned i = 0; i < (major == 1 ? 2u : 4u); ++i)
    {
        s += static_cast<char>((n >> (8 * i)) & 0xFF);
    }
    return s + header + data;
}

std::uint16_t smallIntToHalf(unsigned i) // exact for 0 <= i < 2048
{
    if (i == 0)
    {
        return 0;
    }
    unsigned e = 0;
    while ((i >> (e + 1)) != 0)
    {
        ++e;
    }
    return static_cast<std::uint16_t>(((e + 15) << 10) | ((i << (10 - e)) & 0x3FFu));
}

// arange(n) cast to descr (bool: odd elements true), as tests/npy_numpy.py makes it.
npy::Array pattern(std::string const& descr, std::vector<std::int64_t> const& shape)
{
    npy::Array a{descr, shape, {}};
    std::size_t const n = npy::elementCount(shape);
    std::size_t const item = npy::itemSize(descr);
    a.data.resize(n * item);
    for (std::size_t i = 0; i < n; ++i)
    {
        unsigned char* p = a.data.data() + i * item;
        auto store = [p](auto v) { std::memcpy(p, &v, sizeof v); };
        if (descr == "<f2")
        {
            store(smallIntToHalf(static_cast<unsigned>(i)));
        }
        else if (descr == "<f4")
        {
            store(static_cast<float>(i));
        }
        else if (descr == "<f8")
        {
            store(static_cast<double>(i));
        }
        else if (descr == "|b1")
        {
            store(static_cast<std::uint8_t>(i % 2));
        }
        else // integers: the low `item` bytes of i, as numpy's astype wraps them
        {
            for (std::size_t b = 0; b < item; ++b)
            {
                p[b] = static_cast<unsigned char>((static_cast<std::uint64_t>(i) >> (8 * b)) & 0xFF);
            }
        }
    }
    return a;
}

std::vector<std::string> const kDescrs = {"<f4", "<f2", "<f8", "<i4", "<i8", "<u2", "|u1", "|i1", "|b1"};
std::vector<std::pair<std::string, std::vector<std::int64_t>>> const kShapes
    = {{"scalar", {}}, {"empty", {0, 3}}, {"vec", {5}}, {"mat", {2, 3}}, {"nd", {2, 1, 3, 2}}};

bool same(npy::Array const& a, npy::Array const& b)
{
    return a.descr == b.descr && a.shape == b.shape && a.data == b.data;
}

void testRoundTrips()
{
    for (std::string const& descr : kDescrs)
    {
        for (auto const& [shapeName, shape] : kShapes)
        {
            npy::Array const a = pattern(descr, shape);
            for (unsigned major = 1; major <= 3; ++major)
            {
                std::string const bytes = npy::encode(a, major);
                std::string const what = descr + " " + npy::shapeString(shape) + " v" + std::to_string(major);
                check(bytes[6] == static_cast<char>(major) && bytes[7] == '\0', what + ": version bytes");
                check((bytes.size() - a.data.size()) % 64 == 0 && bytes[bytes.size() - a.data.size() - 1] == '\n',
                    what + ": header padded to 64 bytes, ends with a newline");
                check(same(decode(bytes), a), what + ": round trip");
            }
        }
    }
    // The exact bytes numpy writes for np.save(f, np.zeros((2, 3), '<f4')) (format 1.0, header 118 bytes).
    std::string const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    std::string const header = dict + std::string(118 - dict.size() - 1, ' ') + "\n";
    npy::Array const zeros{"<f4", {2, 3}, std::vector<unsigned char>(24, 0)};
    check(npy::encode(zeros) == std::string("\x93NUMPY\x01\x00\x76\x00", 10) + header + std::string(24, '\0'),
        "format 1.0 bytes identical to numpy's");
    check(npy::encode(zeros, 2).substr(0, 12) == std::string("\x93NUMPY\x02\x00\x74\x00\x00\x00", 12),
        "format 2.0 uses a 4-byte header length");
}

void testLenientParsing()
{
    std::string const data(8, '\x01');
    npy::Array const expected{"<i4", {2}, std::vector<unsigned char>(8, 1)};
    std::vector<std::string> const headers = {
        "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
        "{\"shape\": (2,), \"descr\": \"<i4\", \"fortran_order\": False}",
        "  { 'descr' : '=i4' ,'fortran_order':False,'shape':( 2 , ) }  \n",
        "{'descr': '|i4', 'fortran_order': False, 'shape': (2L,)}",
    };
    for (std::string const& h : headers)
    {
        check(same(decode(makeFile(h, data)), expected), "accepts header " + h);
    }
    npy::Array const byte = decode(makeFile("{'descr': '>u1', 'fortran_order': False, 'shape': ()}", "\x07"));
    check(byte.descr == "|u1" && byte.shape.empty() && byte.data.size() == 1 && byte.data[0] == 7,
        "one-byte types ignore the byte order, '>u1' is '|u1'");
    check(decode(makeFile("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 0, 2)}")).data.empty(),
        "empty array with a zero-length middle dimension");
}

void testErrors()
{
    std::string const f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    std::string const data24(24, '\0');
    expectError([&] { decode(makeFile("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data24)); },
        "src: fortran_order is True (column-major data); only C-order arrays are read: re-save with np.save(path, "
        "np.ascontiguousarray(a))",
        "fortran order");
    expectError([&] { decode(makeFile("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", data24)); },
        "src: dtype '>f4' is big-endian; re-save it little-endian: np.save(path, a.astype('<f4'))", "big-endian");
    expectError([&] { decode(makeFile("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }")); },
        "src: unsupported dtype '<c8' (supported: bool, int8/16/32/64, uint8/16/32/64, float16/32/64)", "complex");
    expectError(
        [&] { decode(makeFile("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }")); },
        "src: structured dtypes are not supported (descr is a list of fields)", "structured dtype");
    expectError([&] { decode("PK\x03\x04 not npy at all"); },
        "src: not an .npy file (no \\x93NUMPY magic string at the start)", "bad magic");
    expectError([&] { decode(makeFile(f4, data24, 4)); },
        "src: unsupported .npy format version 4.0 (1.0, 2.0 and 3.0 are read)", "version 4.0");
    expectError([&] { decode(makeFile(f4, data24).substr(0, 40)); }, "src: truncated header (it declares 59 bytes)",
        "truncated header");
    expectError([&] { decode(makeFile(f4, std::string(20, '\0'))); },
        "src: truncated data: float32 (2, 3) needs 24 bytes, the file has 20", "truncated data");
    expectError([&] { decode(makeFile(f4, std::string(28, '\0'))); },
        "src: unexpected bytes after the data: float32 (2, 3) needs 24 bytes, the file has 28", "trailing data");
    expectError([&] { decode(makeFile("{'descr': '<f4', 'fortran_order': False}")); },
        "src: the header lacks 'shape'", "missing key");
    expectError([&] { decode(makeFile("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'foo': 1}")); },
        "src: unexpected key 'foo' in the header", "unknown key");
    expectError([&] { decode(makeFile("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}")); },
        "src: the header repeats 'descr'", "duplicate key");
    std::string const negative = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }";
    expectError([&] { decode(makeFile(negative)); },
        "src: malformed header at offset 51 (expected a non-negative integer dimension): " + negative,
        "negative dimension");
    std::string const unclosed = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3}";
    expectError([&] { decode(makeFile(unclosed)); }, "src: malformed header at offset 55 (expected ')'): " + unclosed,
        "unclosed tuple");
    expectError([&] { decode(makeFile("{'descr': '<f4', 'fortran_order': 0, 'shape': ()}")); },
        "src: malformed header at offset 34 (expected True or False): {'descr': '<f4', 'fortran_order': 0, "
        "'shape': ()}",
        "fortran_order not a bool");
    expectError([&] { decode(makeFile("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x")); },
        "src: malformed header at offset 60 (nothing after the closing '}'): {'descr': '<f4', 'fortran_order': "
        "False, 'shape': (2, 3), } x",
        "text after the dict");
    std::string const huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}";
    expectError([&] { decode(makeFile(huge)); },
        "src: array too large in shape (4611686018427387904, 4)", "size overflow");
    expectError([] { npy::read("/nonexistent/x.npy"); }, "cannot open '/nonexistent/x.npy': No such file or directory",
        "missing file");
    expectError([] { npy::encode(npy::Array{"<f4", {2, 3}, std::vector<unsigned char>(4)}); },
        "data holds 4 bytes, but float32 (2, 3) needs 24", "encode: wrong data size");
    expectError([] { npy::encode(npy::Array{"<c8", {}, {}}); },
        "cannot write dtype '<c8' (use a canonical descr such as '<f4' or '|b1')", "encode: unsupported dtype");
    expectError([] { npy::write("/nonexistent/dir/x.npy", npy::Array{"<f4", {}, std::vector<unsigned char>(4)}); },
        "cannot write '/nonexistent/dir/x.npy': No such file or directory", "write into a missing folder");
}

// Files numpy wrote (tests/npy_numpy.py write DIR), and files for numpy to check.
void testNumpyFiles(fs::path const& dir)
{
    auto path = [&dir](std::string const& name) { return (dir / name).string(); };
    for (std::string const& descr : kDescrs)
    {
        for (auto const& [shapeName, shape] : kShapes)
        {
            std::string const name = descr.substr(1) + "_" + shapeName + ".npy";
            npy::Array const expected = pattern(descr, shape);
            try
            {
                check(same(npy::read(path("np_" + name)), expected), "numpy's np_" + name + " holds the pattern");
            }
            catch (npy::Error const& e)
            {
                check(false, std::string("reading numpy's file: ") + e.what());
            }
            npy::write(path("cpp_" + name), expected);
        }
    }
    npy::Array const mat = pattern("<f4", {2, 3});
    check(same(npy::read(path("np_v2.npy")), mat), "numpy format 2.0 file");
    check(same(npy::read(path("np_v3.npy")), mat), "numpy format 3.0 file");
    std::string const fortran = path("np_fortran.npy");
    expectError([&] { npy::read(fortran); },
        "'" + fortran + "': fortran_order is True (column-major data); only C-order arrays are read: re-save with "
        "np.save(path, np.ascontiguousarray(a))",
        "numpy Fortran-order file");
    std::string const big = path("np_bigendian.npy");
    expectError([&] { npy::read(big); },
        "'" + big + "': dtype '>i4' is big-endian; re-save it little-endian: np.save(path, a.astype('<i4'))",
        "numpy big-endian file");
    std::string const structured = path("np_structured.npy");
    expectError([&] { npy::read(structured); },
        "'" + structured + "': structured dtypes are not supported (descr is a list of fields)",
        "numpy structured file");
    std::string const unicode = path("np_unicode.npy");
    expectError([&] { npy::read(unicode); },
        "'" + unicode + "': unsupported dtype '<U2' (supported: bool, int8/16/32/64, uint8/16/32/64, float16/32/64)",
        "numpy unicode file");
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        testRoundTrips();
        testLenientParsing();
        testErrors();
        if (argc > 1)
        {
            testNumpyFiles(argv[1]);
        }
        else
        {
            std::cout << "numpy interoperability: skipped (no folder of numpy-written files given)\n";
        }
    }
    catch (std::exception const& e)
    {
        check(false, std::string("unexpected exception: ") + e.what());
    }
    return report();
}
