#include "keymig/log.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace keymig;

namespace {

// Sends fd 2 into a pipe while it lives and collects what arrives; a reader thread
// drains the pipe so that many writers never block on a full one.
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe");
    read_fd_ = fds[0];
    saved_fd_ = ::dup(STDERR_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[1]);
    reader_ = std::thread([this] {
      char buf[4096];
      ssize_t n = 0;
      while ((n = ::read(read_fd_, buf, sizeof buf)) > 0)
        text_.append(buf, static_cast<std::size_t>(n));
    });
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  ~StderrCapture() { stop(); }

  /// Restores stderr and returns everything written since the capture began.
  std::string stop() {
    if (saved_fd_ >= 0) {
      std::fflush(stderr);
      ::dup2(saved_fd_, STDERR_FILENO);  // closes the pipe's last write end: EOF
      ::close(saved_fd_);
      saved_fd_ = -1;
      reader_.join();
      ::close(read_fd_);
    }
    return text_;
  }

 private:
  int read_fd_ = -1;
  int saved_fd_ = -1;
  std::thread reader_;
  std::string text_;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Puts the facade back as a fresh process has it, whatever a test set.
struct Defaults {
  ~Defaults() { log::configure(log::Level::info, log::Format::text); }
};

std::string one_text_line(std::initializer_list<log::Field> fields) {
  StderrCapture capture;
  log::write(log::Level::info, "test", "event", fields);
  const auto lines = lines_of(capture.stop());
  REQUIRE(lines.size() == 1);
  return lines[0];
}

// The part after "... event=event ".
std::string fields_of(const std::string& line) {
  const auto at = line.find(" event=event");
  REQUIRE(at != std::string::npos);
  return line.substr(at + std::string(" event=event").size());
}

}  // namespace

TEST_CASE("levels below the configured one are dropped before any field is formatted",
          "[common][log]") {
  Defaults restore;
  log::configure(log::Level::warn, log::Format::text);
  CHECK_FALSE(log::enabled(log::Level::debug));
  CHECK_FALSE(log::enabled(log::Level::info));
  CHECK(log::enabled(log::Level::warn));
  CHECK(log::enabled(log::Level::error));

  int formatted = 0;
  auto costly = [&] {
    ++formatted;
    return std::string("value");
  };
  StderrCapture capture;
  KEYMIG_LOG(debug, "test", "dropped", {"field", costly()});
  KEYMIG_LOG(info, "test", "dropped", {"field", costly()});
  CHECK(formatted == 0);
  KEYMIG_LOG(warn, "test", "kept", {"field", costly()});
  KEYMIG_LOG(error, "test", "kept", {"field", costly()});
  CHECK(formatted == 2);
  const auto lines = lines_of(capture.stop());
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("level=warn module=test event=kept field=value") != std::string::npos);
  CHECK(lines[1].find("level=error module=test event=kept field=value") != std::string::npos);

  SECTION("debug lets everything through") {
    log::configure(log::Level::debug, log::Format::text);
    CHECK(log::enabled(log::Level::debug));
  }
}

TEST_CASE("a text line is a UTC timestamp, level, module, event and key=value fields",
          "[common][log]") {
  Defaults restore;
  log::configure(log::Level::info, log::Format::text);
  const std::string line = one_text_line(
      {{"run_id", "m1"}, {"rows", 42}, {"negative", -7}, {"ok", true}, {"rate", 1.5}});
  INFO(line);
  CHECK(std::regex_match(
      line, std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                       "level=info module=test event=event run_id=m1 rows=42 negative=-7 "
                       "ok=true rate=1.5")));
}

TEST_CASE("text values are quoted and escaped only when they need it", "[common][log]") {
  Defaults restore;
  log::configure(log::Level::info, log::Format::text);
  const std::map<std::string, std::string> expected{
      {"plain-value_1.2:3", "plain-value_1.2:3"},
      {"two words", R"("two words")"},
      {"", R"("")"},
      {"a=b", R"("a=b")"},
      {R"(say "hi")", R"("say \"hi\"")"},
      {R"(back\slash)", R"("back\\slash")"},
      {"line\nbreak", R"("line\nbreak")"},
      {"cr\rtab\t", R"("cr\rtab\t")"},
      {std::string("nul\0x", 5), R"("nul\u0000x")"},
      {"bell\x07", R"("bell\u0007")"},
      {"caf\xc3\xa9", "caf\xc3\xa9"},  // UTF-8 passes through
  };
  for (const auto& [value, spelled] : expected) {
    INFO(value);
    CHECK(fields_of(one_text_line({{"v", value}})) == " v=" + spelled);
  }
  // Numbers and booleans are never quoted.
  CHECK(fields_of(one_text_line({{"n", 0}, {"b", false}})) == " n=0 b=false");
  // One event, one line, whatever the values hold.
  CHECK(fields_of(one_text_line({{"a", "x\ny"}, {"b", "\n"}})) == R"( a="x\ny" b="\n")");
}

TEST_CASE("a json line is one object with typed fields", "[common][log]") {
  Defaults restore;
  log::configure(log::Level::debug, log::Format::json);
  CHECK(log::format() == log::Format::json);
  StderrCapture capture;
  log::write(log::Level::warn, "engine", "batch_retried",
             {{"run_id", "m1"},
              {"rows", 2000},
              {"ok", false},
              {"seconds", 0.25},
              {"detail", "say \"hi\"\\\n\t\x01 caf\xc3\xa9"},
              {"empty", ""}});
  const auto lines = lines_of(capture.stop());
  REQUIRE(lines.size() == 1);
  INFO(lines[0]);
  const auto j = nlohmann::json::parse(lines[0]);
  CHECK(std::regex_match(j.at("ts").get<std::string>(),
                         std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                    "\\.[0-9]{3}Z")));
  CHECK(j.at("level") == "warn");
  CHECK(j.at("module") == "engine");
  CHECK(j.at("event") == "batch_retried");
  CHECK(j.at("run_id") == "m1");
  CHECK(j.at("rows") == 2000);
  CHECK(j.at("ok") == false);
  CHECK(j.at("seconds").get<double>() == Approx(0.25));
  CHECK(j.at("detail") == "say \"hi\"\\\n\t\x01 caf\xc3\xa9");
  CHECK(j.at("empty") == "");
  // Key order as written: ts, level, module, event, then the fields.
  CHECK(lines[0].rfind(R"({"ts":)", 0) == 0);
  CHECK(lines[0].find(R"("level":"warn","module":"engine","event":"batch_retried","run_id")") !=
        std::string::npos);
}

TEST_CASE("many threads logging at once still give one whole line per event", "[common][log]") {
  Defaults restore;
  constexpr int kThreads = 8;
  constexpr int kEvents = 250;
  // Longer than any stdio buffer chunk, so that a torn write would show.
  const std::string padding(600, 'p');
  for (const auto fmt : {log::Format::text, log::Format::json}) {
    log::configure(log::Level::info, fmt);
    StderrCapture capture;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEvents; ++i)
          KEYMIG_LOG(info, "test", "tick", {"thread", t}, {"i", i}, {"padding", padding});
      });
    for (auto& thread : threads) thread.join();
    const auto lines = lines_of(capture.stop());
    REQUIRE(lines.size() == static_cast<std::size_t>(kThreads * kEvents));
    std::vector<int> next(kThreads, 0);  // each thread's events arrive in its own order
    for (const auto& line : lines) {
      int thread = -1;
      int i = -1;
      if (fmt == log::Format::json) {
        const auto j = nlohmann::json::parse(line);
        REQUIRE(j.at("padding") == padding);
        thread = j.at("thread").get<int>();
        i = j.at("i").get<int>();
      } else {
        std::smatch m;
        REQUIRE(std::regex_match(line, m,
                                 std::regex(".* level=info module=test event=tick thread=([0-9]+) "
                                            "i=([0-9]+) padding=p{600}")));
        thread = std::stoi(m[1]);
        i = std::stoi(m[2]);
      }
      REQUIRE(thread >= 0);
      REQUIRE(thread < kThreads);
      CHECK(i == next[static_cast<std::size_t>(thread)]++);
    }
    for (int count : next) CHECK(count == kEvents);
  }
}

TEST_CASE("level and format names parse, anything else is refused", "[common][log]") {
  log::Level level = log::Level::error;
  CHECK(log::parse_level("debug", level));
  CHECK(level == log::Level::debug);
  CHECK(log::parse_level("info", level));
  CHECK(level == log::Level::info);
  CHECK(log::parse_level("warn", level));
  CHECK(level == log::Level::warn);
  CHECK(log::parse_level("error", level));
  CHECK(level == log::Level::error);
  CHECK_FALSE(log::parse_level("warning", level));
  CHECK_FALSE(log::parse_level("INFO", level));
  CHECK_FALSE(log::parse_level("", level));
  CHECK(level == log::Level::error);  // untouched on failure

  log::Format fmt = log::Format::json;
  CHECK(log::parse_format("text", fmt));
  CHECK(fmt == log::Format::text);
  CHECK(log::parse_format("json", fmt));
  CHECK(fmt == log::Format::json);
  CHECK_FALSE(log::parse_format("JSON", fmt));
  CHECK_FALSE(log::parse_format("logfmt", fmt));
  CHECK(fmt == log::Format::json);
}
