// rtpmidi wraps require('mdns') and require('avahi_pub') in try/catch and runs without them.
throw new Error('mDNS is switched off for the interop tests');
