#pragma once

// Running the real tools the metrics tests drive (promtool, prometheus-pushgateway, curl,
// python3): bounded in time, on loopback, and always reaped.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace keymig::test {

struct RunResult {
  int exit_code = -1;  // -1: killed at the deadline
  std::string output;  // stdout and stderr together
};

inline pid_t spawn(const std::vector<std::string>& argv, int out_fd, int in_fd = -1) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::setpgid(0, 0);  // so the whole tree can be killed by its group id
    if (in_fd >= 0) ::dup2(in_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

/// Runs `argv` to completion (stdin from `stdin_path` if given), killing it after
/// `timeout_seconds`.
inline RunResult run(const std::vector<std::string>& argv, int timeout_seconds = 60,
                     const std::string& stdin_path = "") {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  int in_fd = -1;
  if (!stdin_path.empty()) in_fd = ::open(stdin_path.c_str(), O_RDONLY);
  const pid_t pid = spawn(argv, fds[1], in_fd);
  ::close(fds[1]);
  if (in_fd >= 0) ::close(in_fd);
  RunResult result;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  bool killed = false;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      ::kill(-pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 200))) > 0) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      result.output.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!killed && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

/// A free TCP port on 127.0.0.1 (the kernel picks it; a tiny race remains until the
/// server binds it).
inline int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(s);
    throw std::runtime_error("no free port");
  }
  ::close(s);
  return ntohs(addr.sin_port);
}

/// A server process started for one test and killed (with its group) when it ends.
class Server {
 public:
  Server(const std::vector<std::string>& argv, const std::string& log_path) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) throw std::runtime_error("cannot open " + log_path);
    pid_ = spawn(argv, fd);
    ::close(fd);
  }
  ~Server() {
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  pid_t pid_ = -1;
};

/// GET `url` with curl, bounded by 5 s; empty string when it fails.
inline std::string http_get(const std::string& url) {
  const auto r = run({"curl", "-sf", "--max-time", "5", url}, 10);
  return r.exit_code == 0 ? r.output : std::string();
}

/// Polls `url` until it answers, for up to `seconds`.
inline bool wait_until_up(const std::string& url, int seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (run({"curl", "-sf", "--max-time", "1", "-o", "/dev/null", url}, 5).exit_code == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

/// A fresh directory under $TMPDIR (or /tmp), removed when the test ends.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/keymig-metrics-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { run({"rm", "-rf", path_}, 30); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace keymig::test
