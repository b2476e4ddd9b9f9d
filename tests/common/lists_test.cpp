#include "keymig/lists.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

TEST_CASE("a list splits on commas and keeps empty items for the caller to refuse",
          "[common][lists]") {
  using keymig::split_list;
  CHECK(split_list("a,b, c ") == std::vector<std::string>{"a", "b", "c"});
  CHECK(split_list("") == std::vector<std::string>{""});
  CHECK(split_list("a,,b") == std::vector<std::string>{"a", "", "b"});
  CHECK(split_list("a,") == std::vector<std::string>{"a", ""});
  CHECK(split_list("\tx\t,  ") == std::vector<std::string>{"x", ""});
}
