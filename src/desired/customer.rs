//! Customer-managed environments (Proton's `CUSTOMER_MANAGED` provisioning): infrastructure
//! protond never deploys, whose outputs service instances read like any environment's. The
//! outputs come from the spec (`customer_managed.outputs`), from an existing stack
//! (`customer_managed.stack`, read before the computation by `daemon::customer`), or both,
//! the given ones winning.
//!
//! A customer-managed environment has no planner row, so nothing ever creates, updates or
//! deletes it; it is listed in [`super::DesiredSet::customer_managed`] instead. Pure: it never
//! calls AWS, and never adds a row that could deploy; an environment protond itself deployed
//! stays invalid (kept as is) rather than being handed over silently.

use std::collections::BTreeMap;

use super::environment_id;
use super::ownership::EnvDecl;
use super::rows::Builder;
use crate::spec::CustomerManaged;

/// Makes environment `name` (declared by `d`) customer-managed with the outputs `c` names;
/// else says why it cannot be (the caller adds an invalid row, which never deploys).
pub(crate) fn environment(
    b: &mut Builder<'_>,
    name: &str,
    d: &EnvDecl<'_>,
    c: &CustomerManaged,
) -> Result<(), String> {
    let id = environment_id(name);
    let path = d.path();
    if b.is_deployed(&id) {
        return Err(format!(
            "{path}: customer_managed: protond deployed {id} and its stack is protond's; remove `customer_managed` to keep managing it, or delete the environment first (remove its spec) and then declare the infrastructure you manage as customer-managed"
        ));
    }
    let mut outputs = BTreeMap::new();
    let how = match &c.stack {
        Some(stack) => match b.customer_stacks.get(name) {
            Some(Ok(read)) => {
                outputs.extend(read.clone());
                if c.outputs.is_empty() {
                    format!("outputs of stack {stack}")
                } else {
                    format!(
                        "outputs of stack {stack}, {} given in {path}",
                        c.outputs.len()
                    )
                }
            }
            Some(Err(e)) => {
                return Err(format!(
                    "{path}: customer_managed.stack: cannot read the outputs of stack {stack}: {e}; check the stack's name (or ARN), the region, and the environment's role_arn"
                ));
            }
            None => {
                return Err(format!(
                    "{path}: customer_managed.stack: the outputs of stack {stack} were not read (this run has no AWS access); run with AWS configured"
                ));
            }
        },
        None => format!("{} output(s) given in {path}", c.outputs.len()),
    };
    outputs.extend(c.outputs.clone());
    b.customer_managed(&id, outputs, how);
    Ok(())
}
