// The cpu collective (collective.h): TCP in a star through rank 0. Each call is a header {op, sequence,
// count, root} then the floats, in chunks: rank 0 reads the ranks in order, adds (in rank order, so every
// rank gets the same bits) and sends the sum back. A header that does not match rank 0's own call is an
// error naming both calls: the ranks went out of step. Every wait is bounded by the timeout.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "collective.h"
#include "common.h"

namespace vq {
namespace {

constexpr uint32_t kMagic = 0x56514350;  // "VQCP"
constexpr int64_t kChunk = 1 << 20;       // floats per chunk: 4 MiB of buffer per peer at most

struct IdFields {
  uint32_t magic;
  uint32_t port;
  uint64_t token;
  char host[112];
};
static_assert(sizeof(IdFields) <= sizeof(CollectiveId), "id layout");

// Listeners made by cpu_collective_id, waiting for rank 0's make_cpu_collective (by token).
std::mutex listeners_mu;
std::map<uint64_t, int> listeners;

enum Op : uint32_t { kAllReduce = 1, kBroadcast = 2, kBarrier = 3 };
const char* op_name(uint32_t op) {
  return op == kAllReduce ? "all_reduce" : op == kBroadcast ? "broadcast" : op == kBarrier ? "barrier" : "unknown";
}

struct Header {
  uint32_t op;
  uint32_t root;
  uint64_t seq;
  int64_t n;
};

using Clock = std::chrono::steady_clock;

class CpuCollective : public Collective {
 public:
  CpuCollective(int rank, int size, double timeout_s) : rank_(rank), size_(size), timeout_s_(timeout_s) {}
  ~CpuCollective() override {
    for (int fd : peers_)
      if (fd >= 0) close(fd);
  }

  void connect_all(const IdFields& id) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    if (rank_ == 0) {
      int lfd = -1;
      {
        std::lock_guard<std::mutex> lk(listeners_mu);
        auto it = listeners.find(id.token);
        VQ_CHECK(it != listeners.end(), "cpu collective: rank 0 must create the collective from the id it made itself");
        lfd = it->second;
        listeners.erase(it);
      }
      peers_.assign(size_, -1);
      for (int k = 1; k < size_; k++) {
        wait_fd(lfd, POLLIN, deadline, "the other ranks to connect");
        int fd = accept(lfd, nullptr, nullptr);
        VQ_CHECK(fd >= 0, "cpu collective: accept failed: " << std::strerror(errno));
        tune(fd);
        uint64_t hello[2];
        recv_all(fd, hello, sizeof(hello), deadline, -1);
        VQ_CHECK(hello[0] == id.token, "cpu collective: a connection with another run's id");
        const int r = static_cast<int>(hello[1]);
        VQ_CHECK(r > 0 && r < size_ && peers_[r] < 0, "cpu collective: rank " << r << " connected twice or is out of range");
        peers_[r] = fd;
      }
      close(lfd);
    } else {
      addrinfo hints{}, *res = nullptr;
      hints.ai_family = AF_INET;
      hints.ai_socktype = SOCK_STREAM;
      const std::string port = std::to_string(id.port);
      VQ_CHECK(getaddrinfo(id.host, port.c_str(), &hints, &res) == 0 && res,
               "cpu collective: cannot resolve rank 0's address " << id.host);
      int fd = -1;
      for (;;) {  // rank 0 may not listen yet: retry until the deadline
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
        if (Clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      freeaddrinfo(res);
      VQ_CHECK(fd >= 0, "cpu collective: rank " << rank_ << " could not connect to rank 0 at " << id.host << ":" << id.port
                                                << " within " << timeout_s_ << " s");
      tune(fd);
      const uint64_t hello[2] = {id.token, static_cast<uint64_t>(rank_)};
      send_all(fd, hello, sizeof(hello), deadline, 0);
      peers_.assign(1, fd);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "cpu"; }
  bool device_buffers() const override { return false; }

  void all_reduce_sum(float* data, int64_t n, void*) override { run(kAllReduce, 0, data, n); }
  void broadcast(float* data, int64_t n, int root, void*) override {
    VQ_CHECK(root >= 0 && root < size_, "broadcast: root " << root << " is not a rank of " << size_);
    run(kBroadcast, static_cast<uint32_t>(root), data, n);
  }
  void barrier() override {
    float x = 0.0f;
    run(kBarrier, 0, &x, 1);
  }
  void abort() override {
    aborted_ = true;
    for (int fd : peers_)
      if (fd >= 0) shutdown(fd, SHUT_RDWR);
  }

 private:
  int rank_, size_;
  double timeout_s_;
  std::vector<int> peers_;  // rank 0: fd per rank (index 0 unused); others: the one to rank 0
  uint64_t seq_ = 0;
  std::atomic<bool> aborted_{false};
  std::vector<float> tmp_;

  static void tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }

  std::string who(int peer) const { return peer < 0 ? "a rank" : "rank " + std::to_string(peer); }

  void wait_fd(int fd, short events, Clock::time_point deadline, const std::string& what) {
    for (;;) {
      VQ_CHECK(!aborted_, "cpu collective: aborted (another rank failed)");
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      VQ_CHECK(left > 0, "cpu collective: rank " << rank_ << " timed out after " << timeout_s_ << " s waiting for " << what);
      pollfd p{fd, events, 0};
      const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
      if (r > 0) return;
      VQ_CHECK(r == 0 || errno == EINTR, "cpu collective: poll failed: " << std::strerror(errno));
    }
  }

  void send_all(int fd, const void* p, size_t bytes, Clock::time_point deadline, int peer) {
    const char* c = static_cast<const char*>(p);
    while (bytes > 0) {
      wait_fd(fd, POLLOUT, deadline, who(peer) + " to read");
      const ssize_t k = ::send(fd, c, bytes, MSG_NOSIGNAL);
      VQ_CHECK(k > 0 || errno == EINTR || errno == EAGAIN,
               "cpu collective: rank " << rank_ << " lost " << who(peer) << " (" << std::strerror(errno) << ")");
      if (k > 0) {
        c += k;
        bytes -= static_cast<size_t>(k);
      }
    }
  }

  void recv_all(int fd, void* p, size_t bytes, Clock::time_point deadline, int peer) {
    char* c = static_cast<char*>(p);
    while (bytes > 0) {
      wait_fd(fd, POLLIN, deadline, who(peer));
      const ssize_t k = ::recv(fd, c, bytes, 0);
      VQ_CHECK(k != 0, "cpu collective: rank " << rank_ << " lost " << who(peer) << " (connection closed)");
      VQ_CHECK(k > 0 || errno == EINTR || errno == EAGAIN,
               "cpu collective: rank " << rank_ << " lost " << who(peer) << " (" << std::strerror(errno) << ")");
      if (k > 0) {
        c += k;
        bytes -= static_cast<size_t>(k);
      }
    }
  }

  void run(uint32_t op, uint32_t root, float* data, int64_t n) {
    VQ_CHECK(!aborted_, "cpu collective: aborted (another rank failed)");
    VQ_CHECK(n >= 0, "cpu collective: negative count");
    if (size_ == 1) return;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    const Header mine{op, root, seq_++, n};
    if (rank_ == 0) {
      for (int r = 1; r < size_; r++) {
        Header h{};
        recv_all(peers_[r], &h, sizeof(h), deadline, r);
        VQ_CHECK(h.op == mine.op && h.seq == mine.seq && h.n == mine.n && h.root == mine.root,
                 "cpu collective: the ranks are out of step: rank 0 is in " << op_name(mine.op) << " #" << mine.seq << " of "
                 << mine.n << " floats, rank " << r << " in " << op_name(h.op) << " #" << h.seq << " of " << h.n);
      }
    } else {
      send_all(peers_[0], &mine, sizeof(mine), deadline, 0);
    }
    for (int64_t off = 0; off < n; off += kChunk) {
      const int64_t m = std::min(kChunk, n - off);
      float* d = data + off;
      const size_t bytes = static_cast<size_t>(m) * sizeof(float);
      if (op == kBroadcast) {
        if (rank_ == 0) {
          if (root != 0) recv_all(peers_[root], d, bytes, deadline, static_cast<int>(root));
          for (int r = 1; r < size_; r++)
            if (r != static_cast<int>(root)) send_all(peers_[r], d, bytes, deadline, r);
        } else if (rank_ == static_cast<int>(root)) {
          send_all(peers_[0], d, bytes, deadline, 0);
        } else {
          recv_all(peers_[0], d, bytes, deadline, 0);
        }
        continue;
      }
      if (rank_ == 0) {
        tmp_.resize(static_cast<size_t>(m));
        for (int r = 1; r < size_; r++) {
          recv_all(peers_[r], tmp_.data(), bytes, deadline, r);
          for (int64_t i = 0; i < m; i++) d[i] += tmp_[static_cast<size_t>(i)];
        }
        for (int r = 1; r < size_; r++) send_all(peers_[r], d, bytes, deadline, r);
      } else {
        send_all(peers_[0], d, bytes, deadline, 0);
        recv_all(peers_[0], d, bytes, deadline, 0);
      }
    }
  }
};

}  // namespace

CollectiveId cpu_collective_id(const std::string& host) {
  IdFields f{};
  f.magic = kMagic;
  VQ_CHECK(host.size() < sizeof(f.host), "cpu collective: host name too long: " << host);
  std::memcpy(f.host, host.c_str(), host.size());
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  VQ_CHECK(getaddrinfo(host.c_str(), "0", &hints, &res) == 0 && res, "cpu collective: cannot resolve " << host);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool ok = bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 128) == 0;
  freeaddrinfo(res);
  if (!ok) {
    const std::string why = std::strerror(errno);
    close(fd);
    VQ_FAIL("cpu collective: cannot listen on " << host << ": " << why);
  }
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  f.port = ntohs(a.sin_port);
  f.token = std::random_device{}() * 0x100000001ull ^ static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  {
    std::lock_guard<std::mutex> lk(listeners_mu);
    listeners[f.token] = fd;
  }
  CollectiveId id;
  std::memcpy(id.bytes, &f, sizeof(f));
  return id;
}

std::unique_ptr<Collective> make_cpu_collective(const CollectiveId& id, int rank, int size, double timeout_s) {
  IdFields f;
  std::memcpy(&f, id.bytes, sizeof(f));
  VQ_CHECK(f.magic == kMagic, "cpu collective: the id is not a cpu collective's (was it made by another backend?)");
  VQ_CHECK(size >= 1 && rank >= 0 && rank < size, "cpu collective: rank " << rank << " of " << size << " is out of range");
  VQ_CHECK(timeout_s > 0, "cpu collective: the timeout must be > 0");
  auto c = std::make_unique<CpuCollective>(rank, size, timeout_s);
  if (size > 1) {
    c->connect_all(f);
  } else if (rank == 0) {  // nobody will connect: drop the listener the id made
    std::lock_guard<std::mutex> lk(listeners_mu);
    auto it = listeners.find(f.token);
    if (it != listeners.end()) {
      close(it->second);
      listeners.erase(it);
    }
  }
  return c;
}

}  // namespace vq
