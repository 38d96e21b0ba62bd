/*
 * An intrusive, circular, doubly linked list (the Linux kernel's and h2o's
 * linklist). A struct slb_list is both the head of a list and the link
 * embedded in each element; an unlinked link points at itself, so removing
 * an element twice, or one that was never added, is harmless.
 *
 * No allocation: the owner of the head owns the list, each element owns its
 * link. Use slb_list_entry() (container_of) to get from a link to its element.
 */
#ifndef SLB_LIST_H
#define SLB_LIST_H

#include <stddef.h>

#include "common.h"

struct slb_list {
    struct slb_list *next, *prev;
};

#define SLB_LIST_INIT(name)                                                                                            \
    {                                                                                                                  \
        &(name), &(name)                                                                                               \
    }
#define slb_list_entry(link, type, member) slb_container_of(link, type, member)
#define slb_list_first(head, type, member) slb_list_entry((head)->next, type, member)

static inline void slb_list_init(struct slb_list *l)
{
    l->next = l->prev = l;
}

/* For a head: the list is empty. For a link: the element is in no list. */
static inline int slb_list_empty(const struct slb_list *l)
{
    return l->next == l;
}

static inline int slb_list_linked(const struct slb_list *link)
{
    return link->next != link;
}

static inline void slb_list_insert_before(struct slb_list *pos, struct slb_list *link)
{
    link->prev = pos->prev;
    link->next = pos;
    pos->prev->next = link;
    pos->prev = link;
}

static inline void slb_list_push_back(struct slb_list *head, struct slb_list *link)
{
    slb_list_insert_before(head, link);
}

static inline void slb_list_push_front(struct slb_list *head, struct slb_list *link)
{
    slb_list_insert_before(head->next, link);
}

static inline void slb_list_remove(struct slb_list *link)
{
    link->prev->next = link->next;
    link->next->prev = link->prev;
    link->next = link->prev = link;
}

/* Moves every element of from to the end of to; from ends empty. */
static inline void slb_list_splice(struct slb_list *to, struct slb_list *from)
{
    if (slb_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    slb_list_init(from);
}

/* Iterates links; `tmp` makes it safe to remove `it` inside the loop. */
#define slb_list_foreach_safe(it, tmp, head)                                                                           \
    for ((it) = (head)->next, (tmp) = (it)->next; (it) != (head); (it) = (tmp), (tmp) = (it)->next)

#endif
