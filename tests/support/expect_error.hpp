// Test support: a call must throw exactly `Error` with exactly `message`.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace fpn::testing {

template <typename Error, typename Call>
void expect_error(Call call, const std::string& message) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected: " << message;
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()), message);
  } catch (const std::exception& error) {
    ADD_FAILURE() << "wrong exception type: " << error.what() << "; expected: " << message;
  }
}

}  // namespace fpn::testing
