// Unit test of sha256.hpp (ctest example_sha256): the FIPS 180-4 / NIST example digests. The CLI test
// example_cli_errors_plugin_matches also compares it with CMake's file(SHA256) on the real plugin library.
#include "sha256.hpp"

#include <iostream>
#include <string>

int main()
{
    int failures = 0, checks = 0;
    auto expect = [&](std::string const& message, std::string const& digest) {
        sha256::Hasher h;
        // Fed in uneven pieces, so that block boundaries fall inside update calls.
        for (std::size_t i = 0; i < message.size(); i += 7)
        {
            h.update(std::string_view(message).substr(i, 7));
        }
        std::string const got = h.hex();
        ++checks;
        if (got != digest)
        {
            ++failures;
            std::cout << "FAIL: sha256 of " << message.size() << " bytes: " << got << ", expected " << digest << "\n";
        }
    };
    expect("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    expect(std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    ++checks;
    if (sha256::ofFile("/nonexistent/file"))
    {
        ++failures;
        std::cout << "FAIL: a missing file has a digest\n";
    }
    std::cout << checks - failures << " passed, " << failures << " failed\n";
    return failures == 0 ? 0 : 1;
}
