# Sourced by the benchmarks: a throwaway CA (ca.pem) and a leaf for
# 127.0.0.1 (leaf.pem, leaf.key) in the current directory.
bench_certs() {
    openssl ecparam -genkey -name prime256v1 -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.pem 2>/dev/null
    openssl ecparam -genkey -name prime256v1 -noout -out leaf.key 2>/dev/null
    openssl req -new -key leaf.key -subj /CN=127.0.0.1 -out leaf.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out leaf.pem 2>/dev/null
}
