fn main() {
    let obj = apptag::probes::KERNEL_OBJECT;
    println!("{}", obj.len());
}
