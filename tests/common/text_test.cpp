#include "keymig/text.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

TEST_CASE("a list splits on commas and keeps empty items for the caller to refuse",
          "[common][text]") {
  using keymig::split_list;
  CHECK(split_list("a,b, c ") == std::vector<std::string>{"a", "b", "c"});
  CHECK(split_list("") == std::vector<std::string>{""});
  CHECK(split_list("a,,b") == std::vector<std::string>{"a", "", "b"});
  CHECK(split_list("a,") == std::vector<std::string>{"a", ""});
  CHECK(split_list("\tx\t,  ") == std::vector<std::string>{"x", ""});
}

TEST_CASE("a message that spans lines becomes one line", "[common][text]") {
  using keymig::one_line;
  CHECK(one_line("connection refused\n") == "connection refused");
  CHECK(one_line("FATAL:  no\r\nDETAIL:\tx\n\n") == "FATAL:  no  DETAIL: x");
  CHECK(one_line("") == "");
  CHECK(one_line("  ") == "");
}
