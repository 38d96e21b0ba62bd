#include "curl_uv.h"

#include <stdlib.h>

#include "common.h"
#include "list.h"
#include "log.h"

/* One transfer in flight; owned by the slb_curl_uv while added. */
struct xfer {
    struct slb_list link; /* in slb_curl_uv.xfers */
    CURL *easy;
    slb_curl_uv_done_cb cb;
    void *user;
};

/* One socket curl asked us to watch; owned by the slb_curl_uv, freed in its close callback. */
struct sock {
    uv_poll_t poll;
    struct slb_curl_uv *cu;
    curl_socket_t fd;
};

/* Owned by its creator (see curl_uv.h). */
struct slb_curl_uv {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct slb_list xfers; /* struct xfer: transfers added */
    unsigned handles;      /* open uv handles (timer + polls) */
    int dispatching;       /* inside check_done(): free is deferred */
    int closing;           /* slb_curl_uv_free() was called */
};

static void maybe_release(struct slb_curl_uv *cu)
{
    if (cu->closing && cu->handles == 0 && cu->multi == NULL)
        free(cu);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct slb_curl_uv *cu;

    if (h->type == UV_POLL) {
        struct sock *s = slb_container_of(h, struct sock, poll);
        cu = s->cu;
        free(s);
    } else {
        cu = slb_container_of(h, struct slb_curl_uv, timer);
    }
    cu->handles--;
    maybe_release(cu);
}

static void finish_free(struct slb_curl_uv *cu)
{
    while (!slb_list_empty(&cu->xfers)) {
        struct xfer *x = slb_list_first(&cu->xfers, struct xfer, link);
        slb_list_remove(&x->link);
        curl_multi_remove_handle(cu->multi, x->easy);
        curl_easy_setopt(x->easy, CURLOPT_PRIVATE, NULL);
        free(x);
    }
    /* The socket callback closes the polls of connections curl closes here. */
    curl_multi_cleanup(cu->multi);
    cu->multi = NULL;
    uv_close((uv_handle_t *)&cu->timer, on_handle_closed);
    maybe_release(cu);
}

/* Hands finished transfers to their callbacks, one at a time. */
static void check_done(struct slb_curl_uv *cu)
{
    CURLMsg *msg;
    int left;

    cu->dispatching = 1;
    while (!cu->closing && (msg = curl_multi_info_read(cu->multi, &left)) != NULL) {
        struct xfer *x = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(cu->multi, easy);
        if (x == NULL)
            continue;
        slb_list_remove(&x->link);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        slb_curl_uv_done_cb cb = x->cb;
        void *user = x->user;
        free(x);
        cb(easy, result, user);
    }
    cu->dispatching = 0;
    if (cu->closing)
        finish_free(cu);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = slb_container_of(p, struct sock, poll);
    struct slb_curl_uv *cu = s->cu;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(cu->multi, s->fd, flags, &running);
    check_done(cu);
}

static void on_timer(uv_timer_t *t)
{
    struct slb_curl_uv *cu = slb_container_of(t, struct slb_curl_uv, timer);
    int running;

    curl_multi_socket_action(cu->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(cu);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct slb_curl_uv *cu = userp;
    struct sock *s = socketp;
    int events = 0;

    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_handle_closed);
            if (cu->multi != NULL)
                curl_multi_assign(cu->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = malloc(sizeof(*s));
        if (s == NULL)
            return -1;
        s->cu = cu;
        s->fd = fd;
        if (uv_poll_init_socket(cu->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        cu->handles++;
        curl_multi_assign(cu->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct slb_curl_uv *cu = userp;

    if (timeout_ms < 0)
        uv_timer_stop(&cu->timer);
    else /* 0 too: libuv runs it on the next loop iteration, never inline */
        uv_timer_start(&cu->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

int slb_curl_uv_new(uv_loop_t *loop, struct slb_curl_uv **out)
{
    struct slb_curl_uv *cu = calloc(1, sizeof(*cu));
    int err;

    if (cu == NULL)
        return SLB_ENOMEM;
    cu->loop = loop;
    slb_list_init(&cu->xfers);
    if ((err = uv_timer_init(loop, &cu->timer)) != 0)
        goto fail_timer;
    cu->handles = 1;
    if ((cu->multi = curl_multi_init()) == NULL) {
        err = SLB_ENOMEM;
        goto fail_multi;
    }
    curl_multi_setopt(cu->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(cu->multi, CURLMOPT_SOCKETDATA, cu);
    curl_multi_setopt(cu->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(cu->multi, CURLMOPT_TIMERDATA, cu);
    *out = cu;
    return 0;

fail_multi:
    cu->closing = 1;
    uv_close((uv_handle_t *)&cu->timer, on_handle_closed);
    return err;
fail_timer:
    free(cu);
    return err;
}

void slb_curl_uv_free(struct slb_curl_uv *cu)
{
    if (cu == NULL || cu->closing)
        return;
    cu->closing = 1;
    uv_timer_stop(&cu->timer);
    if (!cu->dispatching)
        finish_free(cu);
}

int slb_curl_uv_add(struct slb_curl_uv *cu, CURL *easy, slb_curl_uv_done_cb cb, void *user)
{
    struct xfer *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return SLB_ENOMEM;
    x->easy = easy;
    x->cb = cb;
    x->user = user;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(cu->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(x);
        return SLB_EPROTO;
    }
    slb_list_push_back(&cu->xfers, &x->link);
    return 0;
}

void slb_curl_uv_remove(struct slb_curl_uv *cu, CURL *easy)
{
    struct xfer *x = NULL;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (x == NULL)
        return;
    curl_multi_remove_handle(cu->multi, easy);
    slb_list_remove(&x->link);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
}
