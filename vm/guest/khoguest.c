// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * khoguest: the lab's guest helper where the guest has no Python (the arm64
 * initramfs, vm/guest/init-initramfs). Built static for the guest's architecture
 * by kho_inspect/lab/rootfs.py. The same steps as vm/guest/scenario.py:
 *
 *   khoguest retrieve NAME SIZE JSON
 *       retrieve the memfd of LUO session NAME (token "KHOI"), compare every 4 KiB
 *       block with the pattern, FINISH the session, write the result to JSON
 *   khoguest preserve NAME SIZE JSON CMD [ARG...]
 *       create a SIZE-byte memfd holding the pattern, preserve it in a new LUO
 *       session NAME, write JSON (with the memfd's PFN runs from
 *       /proc/self/pagemap), then run CMD while the session stays open (closing
 *       the session's file descriptor would unpreserve the memfd): CMD is the
 *       rest of the stage, which ends in "khoguest kexec-exec"
 *   khoguest kexec-load KERNEL INITRD CMDLINE
 *       kexec_file_load(2): KHO hands over only through the file-based load
 *   khoguest kexec-exec
 *       reboot(LINUX_REBOOT_CMD_KEXEC)
 *
 * The LUO uAPI (include/uapi/linux/liveupdate.h): every ioctl is _IO(0xBA, nr) and
 * its argument starts with the u32 size of the struct.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/reboot.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define LIVEUPDATE_DEV "/dev/liveupdate"
#define IOCTL_CREATE_SESSION 0xBA00
#define IOCTL_RETRIEVE_SESSION 0xBA01
#define IOCTL_PRESERVE_FD 0xBA40
#define IOCTL_RETRIEVE_FD 0xBA41
#define IOCTL_FINISH 0xBA42
#define MEMFD_TOKEN 0x4B484F49ULL /* "KHOI" */
#define BLOCK 4096

struct session_arg { uint32_t size; int32_t fd; char name[64]; };
struct fd_arg { uint32_t size; int32_t fd; uint64_t token; } __attribute__((aligned(8)));
struct finish_arg { uint32_t size; uint32_t reserved; };

static void die(const char *what)
{
	fprintf(stderr, "khoguest: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t name_hash(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	return h;
}

/* Block @index of session @name's memfd: 512 words, never all zero. */
static void pattern_block(uint64_t seed, uint64_t index, uint64_t *out)
{
	for (uint64_t j = 0; j < BLOCK / 8; j++)
		out[j] = (seed ^ (index << 16 | j)) * 0x9E3779B97F4A7C15ULL | 1;
}

static int session(int dev, unsigned long request, const char *name)
{
	struct session_arg arg = { .size = sizeof(arg), .fd = -1 };

	strncpy(arg.name, name, sizeof(arg.name) - 1);
	if (ioctl(dev, request, &arg) < 0)
		die(request == IOCTL_CREATE_SESSION ? "create session" : "retrieve session");
	return arg.fd;
}

static int session_fd(int sess, unsigned long request, int fd)
{
	struct fd_arg arg = { .size = sizeof(arg), .fd = fd, .token = MEMFD_TOKEN };

	if (ioctl(sess, request, &arg) < 0)
		die(request == IOCTL_PRESERVE_FD ? "preserve fd" : "retrieve fd");
	return arg.fd;
}

static void write_pfn_runs(FILE *f, int memfd, size_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t pages = size / page;
	unsigned char *map = mmap(NULL, size, PROT_READ, MAP_SHARED, memfd, 0);
	int pm = open("/proc/self/pagemap", O_RDONLY);
	uint64_t start = 0, count = 0, entry;
	int first = 1;

	if (map == MAP_FAILED || pm < 0)
		die("map the memfd / open pagemap");
	fprintf(f, "\"pfn_runs\": [");
	for (size_t i = 0; i < pages; i++) {
		volatile unsigned char c = map[i * page]; /* fault the page in */
		(void)c;
		if (pread(pm, &entry, 8, ((uintptr_t)map / page + i) * 8) != 8)
			die("read pagemap");
		if (!(entry >> 63)) {
			errno = EFAULT;
			die("a memfd page is not present in pagemap");
		}
		uint64_t pfn = entry & ((1ULL << 55) - 1);
		if (count && start + count == pfn) {
			count++;
			continue;
		}
		if (count)
			fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", first ? "" : ", ", start, count),
			first = 0;
		start = pfn;
		count = 1;
	}
	if (count)
		fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", first ? "" : ", ", start, count);
	fprintf(f, "]");
	close(pm);
	munmap(map, size);
}

static int preserve(const char *name, size_t size, const char *json, char **cmd)
{
	int dev = open(LIVEUPDATE_DEV, O_RDWR);
	int memfd = memfd_create(name, 0);
	uint64_t seed = name_hash(name), block[BLOCK / 8];
	FILE *f;
	pid_t pid;
	int status;

	if (dev < 0 || memfd < 0)
		die("open /dev/liveupdate / memfd_create");
	if (ftruncate(memfd, size) < 0)
		die("ftruncate");
	for (uint64_t i = 0; i < size / BLOCK; i++) {
		pattern_block(seed, i, block);
		if (pwrite(memfd, block, BLOCK, i * BLOCK) != BLOCK)
			die("write the memfd");
	}
	session_fd(session(dev, IOCTL_CREATE_SESSION, name), IOCTL_PRESERVE_FD, memfd);
	f = fopen(json, "w");
	if (!f)
		die(json);
	fprintf(f, "{\"session\": \"%s\", \"token\": %llu, \"size\": %zu, \"preserved\": true, ",
		name, MEMFD_TOKEN, size);
	write_pfn_runs(f, memfd, size);
	fprintf(f, "}\n");
	fclose(f);
	/* the session stays open in this process until the kexec ends everything */
	pid = fork();
	if (pid == 0) {
		execvp(cmd[0], cmd);
		die(cmd[0]);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		die("run the rest of the stage");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int retrieve(const char *name, size_t size, const char *json)
{
	int dev = open(LIVEUPDATE_DEV, O_RDWR);
	int sess, memfd;
	uint64_t seed = name_hash(name), want[BLOCK / 8], got[BLOCK / 8];
	long long first_bad = -1;
	size_t bad = 0, actual;
	struct stat st;
	struct finish_arg fin = { .size = sizeof(fin) };
	FILE *f;

	if (dev < 0)
		die("open /dev/liveupdate");
	sess = session(dev, IOCTL_RETRIEVE_SESSION, name);
	memfd = session_fd(sess, IOCTL_RETRIEVE_FD, -1);
	if (fstat(memfd, &st) < 0)
		die("fstat the memfd");
	actual = st.st_size;
	for (uint64_t i = 0; i < size / BLOCK; i++) {
		pattern_block(seed, i, want);
		if (pread(memfd, got, BLOCK, i * BLOCK) != BLOCK || memcmp(want, got, BLOCK)) {
			if (first_bad < 0)
				first_bad = i;
			bad++;
		}
	}
	if (ioctl(sess, IOCTL_FINISH, &fin) < 0)
		die("finish the session");
	f = fopen(json, "w");
	if (!f)
		die(json);
	fprintf(f, "{\"session\": \"%s\", \"token\": %llu, \"size\": %zu, \"bad_blocks\": %zu, "
		"\"first_bad_block\": ", name, MEMFD_TOKEN, actual, bad);
	if (first_bad < 0)
		fprintf(f, "null");
	else
		fprintf(f, "%lld", first_bad);
	fprintf(f, ", \"verified\": %s}\n", actual == size && !bad ? "true" : "false");
	fclose(f);
	return 0;
}

static int kexec_load(const char *kernel, const char *initrd, const char *cmdline)
{
	int k = open(kernel, O_RDONLY), i = open(initrd, O_RDONLY);

	if (k < 0 || i < 0)
		die("open the kernel / initrd");
	if (syscall(SYS_kexec_file_load, k, i, strlen(cmdline) + 1, cmdline, 0UL) < 0)
		die("kexec_file_load");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "retrieve"))
		return retrieve(argv[2], strtoull(argv[3], NULL, 0), argv[4]);
	if (argc >= 6 && !strcmp(argv[1], "preserve"))
		return preserve(argv[2], strtoull(argv[3], NULL, 0), argv[4], argv + 5);
	if (argc == 5 && !strcmp(argv[1], "kexec-load"))
		return kexec_load(argv[2], argv[3], argv[4]);
	if (argc == 2 && !strcmp(argv[1], "kexec-exec")) {
		sync();
		syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
			LINUX_REBOOT_CMD_KEXEC, NULL);
		die("reboot(LINUX_REBOOT_CMD_KEXEC)");
	}
	fprintf(stderr, "usage: khoguest retrieve NAME SIZE JSON | preserve NAME SIZE JSON CMD... "
		"| kexec-load KERNEL INITRD CMDLINE | kexec-exec\n");
	return 2;
}
