// The protocol channel over stdin/stdout or over one TCP connection (POSIX sockets: Linux, Android and Apple
// alike). TCP exists for the iOS runner app, which has no stdin: the controller reaches the app's port through
// usbmux. The emulated iPhone runs the host build in this mode, so it is built and tested here.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "json.hpp"
#include "platform.hpp"

namespace dl {
namespace {

class StdioChannel : public Channel {
public:
    explicit StdioChannel(FILE* out) : out_(out) {}
    bool read_line(std::string* line) override { return static_cast<bool>(std::getline(std::cin, *line)); }
    void write_lines(const std::string& text) override {
        std::fputs(text.c_str(), out_);
        std::fputc('\n', out_);
        std::fflush(out_);
    }

private:
    FILE* out_;
};

class SocketChannel : public Channel {
public:
    explicit SocketChannel(int fd) : fd_(fd) {}
    ~SocketChannel() override { ::close(fd_); }

    bool read_line(std::string* line) override {
        while (true) {
            const size_t nl = buffer_.find('\n');
            if (nl != std::string::npos) {
                *line = buffer_.substr(0, nl);
                buffer_.erase(0, nl + 1);
                return true;
            }
            char chunk[4096];
            const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {  // EOF (the controller closed) or a reset: the same as stdin closing
                if (buffer_.empty()) return false;
                *line = buffer_;  // a last line without its newline still counts, as with getline
                buffer_.clear();
                return true;
            }
            buffer_.append(chunk, static_cast<size_t>(n));
        }
    }

    void write_lines(const std::string& text) override {
        const std::string data = text + "\n";
        size_t sent = 0;
        while (sent < data.size()) {
#ifdef MSG_NOSIGNAL
            const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
#else
            const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, 0);  // SO_NOSIGPIPE is set
#endif
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;  // the controller is gone; the next read says so
            sent += static_cast<size_t>(n);
        }
    }

private:
    int fd_;
    std::string buffer_;
};

std::string errno_text(const std::string& step) { return step + ": " + std::strerror(errno); }

// {"port": N, "pid": P} written to a temporary name beside `path`, then renamed: a reader polling for the file
// (through AFC on a phone) sees nothing or the whole document, never half of it.
bool write_port_file(const std::string& path, int port, std::string* error) {
    const std::string tmp = path + ".tmp." + std::to_string(static_cast<long>(::getpid()));
    const std::string text = JsonObject().add("port", port).add("pid", static_cast<int>(::getpid())).str() + "\n";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) {
        *error = errno_text("--port-file: cannot write " + tmp);
        return false;
    }
    const bool ok = std::fputs(text.c_str(), f) >= 0 && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    if (std::fclose(f) != 0 || !ok) {
        *error = errno_text("--port-file: cannot write " + tmp);
        std::remove(tmp.c_str());
        return false;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        *error = errno_text("--port-file: cannot rename " + tmp + " to " + path);
        std::remove(tmp.c_str());
        return false;
    }
    return true;
}

}  // namespace

std::unique_ptr<Channel> stdio_channel(FILE* out) { return std::make_unique<StdioChannel>(out); }

std::unique_ptr<Channel> tcp_channel(int port, const std::string& port_file, int accept_timeout_s, std::string* error) {
    // A write to a connection the controller closed must not kill dlbench before it can exit cleanly.
    ::signal(SIGPIPE, SIG_IGN);
    const int server = ::socket(AF_INET, SOCK_STREAM, 0);
    if (server < 0) {
        *error = errno_text("--listen: socket");
        return nullptr;
    }
    int one = 1;
    ::setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // only local clients: usbmux on a phone, the controller here
    socklen_t len = sizeof addr;
    if (::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(server, 1) != 0 ||
        ::getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        *error = errno_text("--listen: cannot listen on 127.0.0.1:" + std::to_string(port));
        ::close(server);
        return nullptr;
    }
    const int bound = ntohs(addr.sin_port);
    std::cerr << "dlbench: listening on 127.0.0.1:" << bound << std::endl;
    if (!port_file.empty() && !write_port_file(port_file, bound, error)) {
        ::close(server);
        return nullptr;
    }
    // Nobody connecting (the controller died after launching us) must not leave an app waiting forever with the
    // screen kept awake: give up after the timeout.
    pollfd wait{server, POLLIN, 0};
    int ready;
    do {
        ready = ::poll(&wait, 1, accept_timeout_s * 1000);
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) {
        *error = "--listen: nobody connected within " + std::to_string(accept_timeout_s) + " s (--accept-timeout)";
        ::close(server);
        if (!port_file.empty()) std::remove(port_file.c_str());  // it names a port nobody listens on any more
        return nullptr;
    }
    int fd;
    do {
        fd = ::accept(server, nullptr, nullptr);
    } while (fd < 0 && errno == EINTR);
    ::close(server);  // one connection: nobody else can connect to a run in progress
    if (fd < 0) {
        *error = errno_text("--listen: accept");
        return nullptr;
    }
#ifdef SO_NOSIGPIPE
    ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    return std::make_unique<SocketChannel>(fd);
}

}  // namespace dl
