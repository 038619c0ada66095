// sha256.hpp: SHA-256 (FIPS 180-4) of a file, to compare a plugin library with the hash `dimexport build` recorded
// in build.json. Header-only, C++17.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

namespace sha256
{

class Hasher
{
public:
    void update(unsigned char const* data, std::size_t n)
    {
        mLength += n;
        while (n > 0)
        {
            std::size_t const take = std::min(n, mBlock.size() - mFill);
            std::memcpy(mBlock.data() + mFill, data, take);
            mFill += take;
            data += take;
            n -= take;
            if (mFill == mBlock.size())
            {
                compress();
                mFill = 0;
            }
        }
    }

    void update(std::string_view s) { update(reinterpret_cast<unsigned char const*>(s.data()), s.size()); }

    // The digest as 64 lowercase hex digits; the hasher is spent afterwards.
    std::string hex()
    {
        std::uint64_t const bits = mLength * 8;
        unsigned char const one = 0x80;
        update(&one, 1);
        unsigned char const zero = 0;
        while (mFill != 56)
        {
            update(&zero, 1);
        }
        for (int i = 7; i >= 0; --i)
        {
            unsigned char const b = static_cast<unsigned char>(bits >> (8 * i));
            update(&b, 1);
        }
        static char const kDigits[] = "0123456789abcdef";
        std::string out;
        for (std::uint32_t word : mState)
        {
            for (int shift = 28; shift >= 0; shift -= 4)
            {
                out += kDigits[(word >> shift) & 0xF];
            }
        }
        return out;
    }

private:
    static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

    void compress()
    {
        static constexpr std::uint32_t kK[64] = {0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b,
            0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74,
            0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3,
            0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354,
            0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
            0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3,
            0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa,
            0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        std::uint32_t w[64];
        for (std::size_t i = 0; i < 16; ++i)
        {
            w[i] = static_cast<std::uint32_t>(mBlock[4 * i]) << 24 | static_cast<std::uint32_t>(mBlock[4 * i + 1]) << 16
                | static_cast<std::uint32_t>(mBlock[4 * i + 2]) << 8 | mBlock[4 * i + 3];
        }
        for (std::size_t i = 16; i < 64; ++i)
        {
            std::uint32_t const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            std::uint32_t const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = mState[0], b = mState[1], c = mState[2], d = mState[3], e = mState[4], f = mState[5],
                      g = mState[6], h = mState[7];
        for (std::size_t i = 0; i < 64; ++i)
        {
            std::uint32_t const t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
            std::uint32_t const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        std::uint32_t const add[8] = {a, b, c, d, e, f, g, h};
        for (std::size_t i = 0; i < 8; ++i)
        {
            mState[i] += add[i];
        }
    }

    std::array<std::uint32_t, 8> mState{
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::array<unsigned char, 64> mBlock{};
    std::size_t mFill{0};
    std::uint64_t mLength{0};
};

// The SHA-256 of a file as hex, or nullopt if it cannot be read.
inline std::optional<std::string> ofFile(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        return std::nullopt;
    }
    Hasher hasher;
    char buffer[1 << 16];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0)
    {
        hasher.update(reinterpret_cast<unsigned char const*>(buffer), static_cast<std::size_t>(in.gcount()));
    }
    if (in.bad())
    {
        return std::nullopt;
    }
    return hasher.hex();
}

} // namespace sha256
