#ifndef PORTCULLIS_THREAD_H
#define PORTCULLIS_THREAD_H

// (With the malloc tuning, this belongs in the system layer issue 12 asks for; it lives here until that exists.)

/// Names the calling thread (at most 15 bytes show: `top -H`, sanitizer reports). Swift's Glibc module does not
/// export pthread_setname_np (a GNU extension). Returns 0 or an errno.
int pc_name_this_thread(const char *name);

#endif
