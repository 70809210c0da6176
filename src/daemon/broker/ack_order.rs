//! Input acknowledgements in arrival order.
//!
//! MQTT requires a client to send PUBACKs in the order the broker's QoS 1 PUBLISHes arrived
//! (MQTT 5 §4.6, [MQTT-4.6.0-2]; 3.1.1 §4.6 likewise). The daemon completes inputs out of order
//! (an empty text is rejected at once while a batch before it is still being classified), so an
//! input whose reply is with the broker waits here until every input received before it can be
//! acknowledged too. Mosquitto tolerates out-of-order acks; rumqttd (the demo's embedded broker)
//! drops the connection.

use std::collections::VecDeque;

/// QoS 1 inputs of the current connection not yet acknowledged, oldest first.
#[derive(Debug, Default)]
pub struct AckOrder {
    /// `(packet id, ready to acknowledge)`.
    inputs: VecDeque<(u16, bool)>,
}

impl AckOrder {
    /// A QoS 1 input arrived with this packet id.
    pub fn received(&mut self, pkid: u16) {
        self.inputs.push_back((pkid, false));
    }

    /// The input's reply is with the broker: calls `release` with each packet id that may now
    /// be acknowledged, in arrival order (none while an older input is still in work).
    pub fn completed(&mut self, pkid: u16, mut release: impl FnMut(u16)) {
        if let Some(entry) = self
            .inputs
            .iter_mut()
            .find(|(id, ready)| *id == pkid && !ready)
        {
            entry.1 = true;
        }
        while let Some(&(id, true)) = self.inputs.front() {
            self.inputs.pop_front();
            release(id);
        }
    }

    /// The connection is gone: its packet ids mean nothing on the next one (the broker
    /// redelivers what was not acknowledged).
    pub fn clear(&mut self) {
        self.inputs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(order: &mut AckOrder, pkid: u16) -> Vec<u16> {
        let mut released = Vec::new();
        order.completed(pkid, |id| released.push(id));
        released
    }

    #[test]
    fn a_later_input_waits_for_the_earlier_ones() {
        let mut order = AckOrder::default();
        for pkid in [1, 2, 3] {
            order.received(pkid);
        }
        assert_eq!(complete(&mut order, 3), Vec::<u16>::new());
        assert_eq!(complete(&mut order, 1), vec![1]);
        assert_eq!(complete(&mut order, 2), vec![2, 3]);
        assert!(order.inputs.is_empty());
    }

    #[test]
    fn unknown_and_repeated_completions_release_nothing() {
        let mut order = AckOrder::default();
        order.received(7);
        order.received(8);
        assert_eq!(complete(&mut order, 99), Vec::<u16>::new());
        assert_eq!(complete(&mut order, 8), Vec::<u16>::new());
        assert_eq!(complete(&mut order, 8), Vec::<u16>::new());
        assert_eq!(order.inputs.len(), 2);
        assert_eq!(complete(&mut order, 7), vec![7, 8]);
    }

    #[test]
    fn clearing_forgets_the_connection() {
        let mut order = AckOrder::default();
        order.received(1);
        order.clear();
        assert_eq!(complete(&mut order, 1), Vec::<u16>::new());
        assert!(order.inputs.is_empty());
    }
}
