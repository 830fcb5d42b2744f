/*
 * test_netstat.c: /proc/net/netstat's text read for the listen-queue
 * counters, fed the file's shape and its broken variants.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "netstat.h"

/* The shape of the file on Linux 6, cut short. */
static const char sample[] =
    "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops "
    "TCPFastOpenListenOverflow\n"
    "TcpExt: 0 0 17 23 5\n"
    "IpExt: InNoRoutes ListenOverflows OutOctets\n"
    "IpExt: 1 99 18446744073709551615\n";

static void
reads_a_counter_by_name_under_its_protocol(void **state)
{
	uint64_t v = 0;

	(void)state;
	assert_int_equal(netstat_value(sample, "TcpExt", "ListenOverflows",
	    &v), 0);
	assert_int_equal(v, 17);
	assert_int_equal(netstat_value(sample, "TcpExt", "ListenDrops", &v), 0);
	assert_int_equal(v, 23);
	/* Whole names only: not the TCPFastOpen one that ends the same. */
	assert_int_equal(netstat_value(sample, "TcpExt",
	    "TCPFastOpenListenOverflow", &v), 0);
	assert_int_equal(v, 5);
	/* The same name under another protocol is that protocol's. */
	assert_int_equal(netstat_value(sample, "IpExt", "ListenOverflows",
	    &v), 0);
	assert_int_equal(v, 99);
	assert_int_equal(netstat_value(sample, "IpExt", "OutOctets", &v), 0);
	assert_true(v == UINT64_MAX);
}

static void
refuses_what_is_not_there_or_not_a_number(void **state)
{
	uint64_t v = 7;

	(void)state;
	assert_int_equal(netstat_value(sample, "TcpExt", "Listen", &v), -1);
	assert_int_equal(netstat_value(sample, "Tcp", "ListenDrops", &v), -1);
	assert_int_equal(netstat_value("", "TcpExt", "ListenDrops", &v), -1);
	/* Names without their line of values, or values cut short. */
	assert_int_equal(netstat_value("TcpExt: ListenDrops\n", "TcpExt",
	    "ListenDrops", &v), -1);
	assert_int_equal(netstat_value("TcpExt: A ListenDrops\nTcpExt: 1\n",
	    "TcpExt", "ListenDrops", &v), -1);
	assert_int_equal(netstat_value("TcpExt: ListenDrops\nTcpExt: x1\n",
	    "TcpExt", "ListenDrops", &v), -1);
	assert_int_equal(netstat_value("TcpExt: ListenDrops\nTcpExt: 1x\n",
	    "TcpExt", "ListenDrops", &v), -1);
	assert_int_equal(netstat_value("TcpExt: ListenDrops\n"
	    "TcpExt: 18446744073709551616\n", "TcpExt", "ListenDrops", &v), -1);
	/* No newline at the end of the file is still a line. */
	assert_int_equal(netstat_value("TcpExt: ListenDrops\nTcpExt: 4",
	    "TcpExt", "ListenDrops", &v), 0);
	assert_int_equal(v, 4);
}

/* The file of this machine has both, whatever their values. */
static void
reads_this_machines_file(void **state)
{
	struct netstat_listen ls;

	(void)state;
	assert_int_equal(netstat_listen(&ls), 0);
	assert_true(ls.drops >= ls.overflows);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reads_a_counter_by_name_under_its_protocol),
		cmocka_unit_test(refuses_what_is_not_there_or_not_a_number),
		cmocka_unit_test(reads_this_machines_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
