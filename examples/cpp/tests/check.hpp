// The tiny check/report helpers shared by the example's unit tests.
#pragma once

#include <iostream>
#include <string>

namespace check_detail
{
inline int gChecks = 0;
inline int gFailures = 0;
} // namespace check_detail

inline void check(bool ok, std::string const& what)
{
    ++check_detail::gChecks;
    if (!ok)
    {
        ++check_detail::gFailures;
        std::cout << "FAIL: " << what << "\n";
    }
}

// Prints "N passed, M failed" and returns the process exit code.
inline int report()
{
    std::cout << check_detail::gChecks - check_detail::gFailures << " passed, " << check_detail::gFailures
              << " failed\n";
    return check_detail::gFailures == 0 ? 0 : 1;
}
