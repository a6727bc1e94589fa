/* A server that, like many daemons, reads its configuration from drop-in directories at start-up
 * and refuses to start without them: it opendir()s /etc/app/conf.d and loads every *.conf there
 * (at least one), and opendir()s /etc/app/hooks.d (shipped empty: only its existence matters).
 * Then it answers every HTTP request on port 8080 with what it loaded. Exits on SIGINT/SIGTERM.
 * Built statically by fixtures::confapp(), so the image holds this program and its config. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONF_DIR "/etc/app/conf.d"
#define HOOKS_DIR "/etc/app/hooks.d"

static char body[8192];
static size_t body_len;

static void stop(int sig) { (void)sig; _exit(0); }

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void append(const char *s, size_t n) {
    if (n > sizeof body - body_len) n = sizeof body - body_len;
    memcpy(body + body_len, s, n);
    body_len += n;
}

int main(void) {
    struct sigaction quit = {.sa_handler = stop};
    sigaction(SIGINT, &quit, NULL);
    sigaction(SIGTERM, &quit, NULL);
    signal(SIGPIPE, SIG_IGN);

    DIR *dir = opendir(CONF_DIR);
    if (!dir) {
        fprintf(stderr, "could not open configuration directory %s: %s\n", CONF_DIR, strerror(errno));
        return 1;
    }
    char *names[64];
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && count < 64) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".conf") == 0) names[count++] = strdup(e->d_name);
    }
    closedir(dir);
    if (count == 0) {
        fprintf(stderr, "no *.conf in %s\n", CONF_DIR);
        return 1;
    }
    qsort(names, count, sizeof names[0], by_name);
    for (size_t i = 0; i < count; i++) {
        char path[512], buf[4096];
        snprintf(path, sizeof path, "%s/%s", CONF_DIR, names[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "could not read %s: %s\n", path, strerror(errno));
            return 1;
        }
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0) append(buf, (size_t)r);
        close(fd);
    }

    DIR *hooks = opendir(HOOKS_DIR);
    if (!hooks) {
        fprintf(stderr, "could not open configuration directory %s: %s\n", HOOKS_DIR, strerror(errno));
        return 1;
    }
    int nhooks = 0;
    while ((e = readdir(hooks)))
        if (e->d_name[0] != '.') nhooks++;
    closedir(hooks);
    char line[64];
    append(line, (size_t)snprintf(line, sizeof line, "hooks=%d\n", nhooks));

    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(8080)};
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
        perror("listen on :8080");
        return 1;
    }
    fprintf(stderr, "loaded %zu file(s) from %s, %d hook(s); listening on :8080\n", count, CONF_DIR, nhooks);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        char req[2048];
        (void)read(c, req, sizeof req);
        char head[160];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n",
                         body_len);
        (void)write(c, head, (size_t)n);
        (void)write(c, body, body_len);
        close(c);
    }
}
